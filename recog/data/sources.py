"""A dataset source: a TFDS builder plus what the trainer needs to know about it."""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tensorflow_datasets as tfds

from recog.errors import UserError

MEASURED_EXAMPLES = 64


@dataclasses.dataclass
class TfdsSource:
    """Any TFDS dataset with an image feature and a ClassLabel feature.

    Every source in recog ends as one of these, so every dataset takes the same path into training.
    """

    builder: tfds.core.DatasetBuilder
    image_key: str = "image"
    label_key: str = "label"
    # Split names a config may use for TFDS split specs, e.g. {"validation": "train[80%:90%]"},
    # so that one config works whether the data comes from TFDS or from a folder.
    split_aliases: dict[str, str] = dataclasses.field(default_factory=dict)

    def resolve_split(self, split):
        return self.split_aliases.get(split, split) if isinstance(split, str) else split

    def prepare(self) -> None:
        """Runs TFDS's download_and_prepare once; a no-op when the data directory already has it."""
        if not self.builder.is_prepared():
            self.builder.download_and_prepare()

    @property
    def class_names(self) -> list[str]:
        return list(self.builder.info.features[self.label_key].names)

    @property
    def channels(self) -> int:
        return self.builder.info.features[self.image_key].shape[-1]

    @property
    def num_classes(self) -> int:
        return self.builder.info.features[self.label_key].num_classes

    def num_examples(self, split: str) -> int:
        return self.builder.info.splits[self.resolve_split(split)].num_examples

    def check_split(self, split: str) -> None:
        try:
            self.num_examples(split)
        except (KeyError, ValueError) as e:
            known = ", ".join(self.builder.info.splits.keys())
            raise UserError(
                f"dataset {self.builder.name!r} has no split {split!r} ({e}); its splits: {known}."
            ) from None

    def mean_example_bytes(self, split: str) -> float:
        """The average size of one stored (encoded) example: from the sizes TFDS recorded when it
        prepared the data, else (mocked data) measured on the first examples of `split`."""
        splits = list(self.builder.info.splits.values())
        stored_bytes = sum(info.num_bytes for info in splits)
        if stored_bytes:
            return stored_bytes / sum(info.num_examples for info in splits)
        first = self.read(split, decode=False).take(MEASURED_EXAMPLES).as_numpy_iterator()
        sizes = [len(example["image"]) for example in first]
        return sum(sizes) / max(1, len(sizes))

    def read(self, split: str, *, decode: bool = True) -> tf.data.Dataset:
        """Examples of `split` in a fixed order, as {"image": uint8 HxWxC, "label": int64}.

        With decode=False the image stays as stored: a scalar string of PNG or JPEG bytes, for
        `recog.augment.apply` to decode after the shuffle.
        """
        ds = self.builder.as_dataset(
            split=self.resolve_split(split),
            shuffle_files=False,
            decoders=None if decode else {self.image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(add_tfds_id=False, try_autocache=False),
        )
        return ds.map(
            lambda ex: {"image": ex[self.image_key], "label": ex[self.label_key]},
            num_parallel_calls=tf.data.AUTOTUNE,
        )
