"""Example dataset plugin: `shapes`, circles, squares and triangles drawn at random, no download.

Written only against recog's public API (`from recog import DATASETS, TfdsSource`), like a plugin
of your own. Every module in this folder is loaded at start-up; train on it from any experiment
whose config suits 32x32 RGB images, e.g.

    python -m recog.main --experiment=digits_cnn --config.data.name=shapes \\
        --config.data.mean='(0.5, 0.5, 0.5)' --config.data.std='(0.25, 0.25, 0.25)' \\
        --workdir=workdirs/shapes

The data set is a TFDS GeneratorBasedBuilder defined here, prepared once into the TFDS data
directory (config.data.data_dir) like any TFDS data set: 3,000 `train` and 600 `test` images of
32x32 RGB, a third of each class. Each image is one filled shape of a random colour, size
(radius 5 to 13 px), position and rotation on a background of another random colour, with pixel
noise; example i of a split is drawn from a generator seeded by (split seed, i), so every machine
prepares the same images.
"""

import typing

import numpy as np
import tensorflow_datasets as tfds

from recog import DATASETS, TfdsSource

CLASSES = ("circle", "square", "triangle")
SIZE = 32
SPLITS = {"train": (0, 3_000), "test": (1, 600)}  # split: (seed, number of images)
MIN_RADIUS, MAX_RADIUS = 5.0, 13.0
MIN_COLOUR_DISTANCE = 100.0  # between shape and background, in RGB units of 0..255
NOISE_STD = 8.0


def random_colour_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background colour and a shape colour that stands out from it."""
    while True:
        background, shape = rng.uniform(0, 255, size=(2, 3))
        if np.linalg.norm(background - shape) >= MIN_COLOUR_DISTANCE:
            return background, shape


def shape_mask(label: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean SIZE x SIZE mask of one shape of class `label`, at a random place and rotation.

    Squares and triangles are regular polygons inscribed in a circle of the drawn radius; a pixel
    is inside a convex polygon when it lies on the inner side of every edge.
    """
    radius = rng.uniform(MIN_RADIUS, MAX_RADIUS)
    centre = rng.uniform(radius, SIZE - radius, size=2)
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5 - centre[:, None, None]
    if CLASSES[label] == "circle":
        return x**2 + y**2 <= radius**2
    corners = 4 if CLASSES[label] == "square" else 3
    angles = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(corners) / corners
    xs, ys = radius * np.cos(angles), radius * np.sin(angles)
    inside = np.ones((SIZE, SIZE), bool)
    for i in range(corners):
        (x0, y0), (x1, y1) = (xs[i], ys[i]), (xs[(i + 1) % corners], ys[(i + 1) % corners])
        inside &= (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0) >= 0
    return inside


def draw(label: int, rng: np.random.Generator) -> np.ndarray:
    """One SIZE x SIZE x 3 uint8 image of a shape of class `label`."""
    background, colour = random_colour_pair(rng)
    image = np.where(shape_mask(label, rng)[..., None], colour, background)
    image = image + rng.normal(0, NOISE_STD, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


class ProceduralShapes(tfds.core.GeneratorBasedBuilder):
    """Circles, squares and triangles at random places, sizes, rotations and colours, 32x32 RGB."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: typing.ClassVar = {"1.0.0": "3,000 train and 600 test images."}

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo itself, not dataset_info_from_configs: that one reads metadata files from the
        # builder's package, and a plugin loaded from a file has none.
        return tfds.core.DatasetInfo(
            builder=self,
            description="Circles, squares and triangles drawn at random (recog plugins/shapes.py)",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
                    "label": tfds.features.ClassLabel(names=CLASSES),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Drawn here, nothing to download.
        return {split: self._generate_examples(*spec) for split, spec in SPLITS.items()}

    def _generate_examples(self, seed: int, count: int):
        for i in range(count):
            label = i % len(CLASSES)
            yield i, {"image": draw(label, np.random.default_rng([seed, i])), "label": label}


@DATASETS.register("shapes")
def shapes(data_dir: str | None = None) -> TfdsSource:
    """Circles, squares and triangles drawn at random, 32x32 RGB, no download (plugin)."""
    return TfdsSource(ProceduralShapes(data_dir=data_dir))
