"""Test-time augmentation: the views of each image whose logits are averaged, the same in eval,
robustness, predict, export and Grad-CAM.

- config.eval_flip: each image and its mirror image;
- config.eval_rotations: 1 (upright only), 2 (and turned 180 degrees) or 4 (every quarter turn).
  Right-angle turns move pixels without resampling, so a network trained on turned images gives
  exactly the same prediction for an image and its turns by 90 degrees when all four are averaged.

The views are the product of the two: eval_flip and eval_rotations=4 average eight.
"""

from typing import NamedTuple

import jax.numpy as jnp
import ml_collections

from recog.errors import UserError

ROTATION_COUNTS = (1, 2, 4)


class View(NamedTuple):
    quarter_turns: int  # anticlockwise
    mirrored: bool  # left-right, before the turn

    def apply(self, images: jnp.ndarray) -> jnp.ndarray:
        """This view of images (batch, height, width, ...)."""
        if self.mirrored:
            images = images[:, :, ::-1]
        return jnp.rot90(images, self.quarter_turns, axes=(1, 2))

    def undo(self, maps: jnp.ndarray) -> jnp.ndarray:
        """Maps (batch, height, width, ...) computed on this view, back onto the image."""
        maps = jnp.rot90(maps, -self.quarter_turns, axes=(1, 2))
        return maps[:, :, ::-1] if self.mirrored else maps


UPRIGHT = (View(0, False),)


def of(config: ml_collections.ConfigDict) -> tuple[View, ...]:
    """The views config.eval_flip and config.eval_rotations ask for (a config written before
    either existed has the upright view only)."""
    rotations = config.get("eval_rotations", 1)
    if rotations not in ROTATION_COUNTS:
        raise UserError(
            f"config.eval_rotations must be one of {ROTATION_COUNTS} (evenly spaced quarter "
            f"turns), not {rotations!r}."
        )
    mirrors = (False, True) if config.get("eval_flip", False) else (False,)
    return tuple(
        View(turn * 4 // rotations, mirrored) for turn in range(rotations) for mirrored in mirrors
    )


def average_logits(model, images: jnp.ndarray, views: tuple[View, ...]) -> jnp.ndarray:
    """The model's logits averaged over the views of normalised images."""
    return sum(model(view.apply(images)) for view in views) / len(views)


def describe(views: tuple[View, ...]) -> str:
    """For logs and export metadata: 'upright', 'upright and mirrored, 4 quarter turns each'."""
    turns = len({view.quarter_turns for view in views})
    mirrored = any(view.mirrored for view in views)
    text = "upright and mirrored" if mirrored else "upright"
    return text if turns == 1 else f"{text}, {turns} evenly spaced quarter turns each"
