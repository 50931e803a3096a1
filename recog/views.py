"""Test-time views: each image, and with config.eval_flip its mirror image too, whose logits are
averaged, the same in eval, robustness, predict, export and Grad-CAM."""

from typing import NamedTuple

import jax.numpy as jnp
import ml_collections


class View(NamedTuple):
    mirrored: bool  # left-right

    def apply(self, images: jnp.ndarray) -> jnp.ndarray:
        """This view of images (batch, height, width, ...)."""
        return images[:, :, ::-1] if self.mirrored else images

    def undo(self, maps: jnp.ndarray) -> jnp.ndarray:
        """Maps (batch, height, width) computed on this view, back onto the image."""
        return self.apply(maps)


UPRIGHT = (View(False),)


def of(config: ml_collections.ConfigDict) -> tuple[View, ...]:
    """The views config.eval_flip asks for."""
    return (View(False), View(True)) if config.eval_flip else UPRIGHT


def average_logits(model, images: jnp.ndarray, views: tuple[View, ...]) -> jnp.ndarray:
    """The mean of the model's logits over the views of normalised images."""
    return sum(model(view.apply(images)) for view in views) / len(views)


def describe(views: tuple[View, ...]) -> str:
    """For logs and export metadata: 'upright' or 'upright and mirrored'."""
    return "upright and mirrored" if any(view.mirrored for view in views) else "upright"
