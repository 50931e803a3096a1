"""Built-in augmentations; importing this package registers them."""

from recog.augment import basic  # noqa: F401
from recog.augment.pipeline import apply, parse

__all__ = ["apply", "parse"]
