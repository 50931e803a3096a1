"""Built-in augmentations; importing this package registers them."""

from recog.augment import basic, batch, color, crop, geometry, randaugment  # noqa: F401
from recog.augment.pipeline import apply, parse

__all__ = ["apply", "parse"]
