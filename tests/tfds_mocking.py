"""TFDS's own builders with mocked data, offline: random examples of a builder's own feature spec,
serialized and read back as TFDS reads prepared data, and split metadata written here so that
split sizes are known (TFDS 4.9.10 ships none for `tfds.testing.mock_data`, without which every
split is empty)."""

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.testing.mocking import RandomFakeGenerator


def serialized_examples(builder, split, decoders=None, read_config=None, **kwargs):
    """`builder.as_dataset` from random examples made once and held serialized in memory, read
    through TFDS's own deserialization with the caller's decoders (SkipDecoding gives the encoded
    image), instead of mock_data's Python generator that draws them anew on every pass."""
    del read_config, kwargs
    features = builder.info.features
    examples = RandomFakeGenerator(features, builder.info.splits[split].num_examples)
    serialized = [features.serialize_example(ordered_boxes(features, ex)) for ex in examples]
    ds = tf.data.Dataset.from_tensor_slices(serialized)
    return ds.map(lambda s: features.deserialize_example(s, decoders=decoders))


def ordered_boxes(features, example: dict) -> dict:
    """The example with the corners of its random boxes in order (ymin <= ymax, xmin <= xmax), as
    serializing a box requires and RandomFakeGenerator does not ensure."""
    for key, feature in features.items():
        if isinstance(feature, tfds.features.BBoxFeature):
            corners = np.reshape(example[key], (2, 2))  # (ymin, xmin), (ymax, xmax)
            example[key] = np.sort(corners, axis=0).ravel()
    return example


@contextlib.contextmanager
def mocked_tfds(name: str, data_dir: Path, splits: Iterable[str], examples: int) -> Iterator[None]:
    """Within it, TFDS's real `name` builder yields `examples` random examples of its own feature
    spec in each of `splits`, from `data_dir`, with nothing downloaded or prepared."""
    builder = tfds.builder(name, data_dir=str(data_dir))
    sizes = [tfds.core.SplitInfo(name=s, shard_lengths=[examples], num_bytes=0) for s in splits]
    builder.info.set_splits(tfds.core.SplitDict(sizes))
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    with tfds.testing.mock_data(
        data_dir=str(data_dir),
        policy=tfds.testing.MockPolicy.USE_FILES,
        as_dataset_fn=serialized_examples,
    ):
        yield
