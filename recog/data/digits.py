"""The embedded `digits` data set: scikit-learn's 1,797 real 8x8 scans of handwritten digits.

It ships inside the scikit-learn package, so it needs no network. It is prepared into the TFDS data
directory by an ordinary TFDS builder (`sklearn_digits`) and so takes the same path into training
as any TFDS data set.

Fixed split: example i of `sklearn.datasets.load_digits()` goes to `test` when i % 5 == 0 (360
examples) and to `train` otherwise (1,437 examples). Pixel values 0..16 are scaled to 0..255.
"""

import typing

import numpy as np
import tensorflow_datasets as tfds

from recog.data.sources import TfdsSource
from recog.registry import DATASETS


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's handwritten digits (UCI ML hand-written digits, test part), 8x8 grayscale."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: typing.ClassVar = {"1.0.0": "Split by index: i % 5 == 0 is test."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The data comes with scikit-learn.
        return {"train": self._generate_examples(test=False), "test": self._generate_examples(True)}

    def _generate_examples(self, test: bool):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
        for i, (image, label) in enumerate(zip(images, digits.target, strict=True)):
            if (i % 5 == 0) == test:
                yield i, {"image": image, "label": int(label)}


@DATASETS.register("digits")
def digits(data_dir: str | None = None) -> TfdsSource:
    """scikit-learn's 1,797 handwritten digit scans, 8x8 grayscale, shipped with it: no download."""
    return TfdsSource(SklearnDigits(data_dir=data_dir))
