"""Test-time augmentation: the views of each image whose logits are averaged, the same in eval,
robustness, predict, export and Grad-CAM.

- config.eval_flip: each image and its mirror image;
- config.eval_rotations: 1 (upright only), 2 (and turned 180 degrees) or 4 (every quarter turn).
  Right-angle turns move pixels without resampling, so a network trained on turned images gives
  exactly the same prediction for an image and its turns by 90 degrees when all four are averaged.

- config.eval_tilt_degrees > 0: each of those also tilted by plus and minus that many degrees
  about its centre (bilinear, corners black, as a photo turned by those degrees): three times the
  views. A network that is invariant to quarter turns (p4m_resnet18) then sees a photo turned by
  any multiple of the tilt, up to its corners, the way it sees the upright one.

The views are the product of the three: eval_flip and eval_rotations=4 average eight, and 24 with
a tilt.

- config.orientation_weight > 0: the model has an orientation head (ORIENTATIONS more logits
  after the classes, trained to say which quarter turn a view is; recog/train/step.py), and each
  view's class logits count by the head's probability that the view is upright, instead of all
  alike. With the four quarter turns this turns an image the right way up before recognising it,
  so a network trained on upright photos keeps its upright accuracy at every angle.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from recog.augment import device_randaugment
from recog.errors import UserError

ROTATION_COUNTS = (1, 2, 4)
ORIENTATIONS = 4  # the orientation head's classes: 0, 1, 2 or 3 anticlockwise quarter turns


def tilt(images: jnp.ndarray, degrees: float, fill=0.0) -> jnp.ndarray:
    """images (batch, height, width, channels) or maps (batch, height, width) turned
    anticlockwise by `degrees` about their centre, as the rotation augmentation and the robustness
    eval turn photos: bilinear, and what comes from outside the image takes the value `fill`."""
    if not degrees:
        return images
    maps = images.ndim == 3
    images = images[..., None] if maps else images
    matrix = device_randaugment.rotation_matrix(images[0], degrees)
    fill = jnp.asarray(fill, images.dtype)
    turned = jax.vmap(lambda image: device_randaugment.warp(image, matrix, fill))(images)
    return turned[..., 0] if maps else turned


class View(NamedTuple):
    quarter_turns: int  # anticlockwise
    mirrored: bool  # left-right, before the turn
    tilt_degrees: float = 0.0  # anticlockwise, before the mirror
    fill: tuple[float, ...] = (0.0,)  # the tilt's corners: black, as the model's inputs hold it

    def apply(self, images: jnp.ndarray) -> jnp.ndarray:
        """This view of images (batch, height, width, ...)."""
        images = tilt(images, self.tilt_degrees, self.fill)
        if self.mirrored:
            images = images[:, :, ::-1]
        return jnp.rot90(images, self.quarter_turns, axes=(1, 2))

    def undo(self, maps: jnp.ndarray) -> jnp.ndarray:
        """Maps (batch, height, width) computed on this view, back onto the image (the tilt's
        corners, which show nothing of the image, are dropped)."""
        maps = jnp.rot90(maps, -self.quarter_turns, axes=(1, 2))
        maps = maps[:, :, ::-1] if self.mirrored else maps
        return tilt(maps, -self.tilt_degrees)


UPRIGHT = (View(0, False),)


def of(config: ml_collections.ConfigDict) -> tuple[View, ...]:
    """The views config.eval_flip, config.eval_rotations and config.eval_tilt_degrees ask for (a
    config written before any of them existed has the upright view only)."""
    rotations = config.get("eval_rotations", 1)
    tilt_degrees = float(config.get("eval_tilt_degrees", 0.0))
    if not 0 <= tilt_degrees < 90:
        raise UserError(
            f"config.eval_tilt_degrees must be at least 0 and under 90 (0: no tilted views), not "
            f"{tilt_degrees!r}."
        )
    if rotations not in ROTATION_COUNTS:
        raise UserError(
            f"config.eval_rotations must be one of {ROTATION_COUNTS} (evenly spaced quarter "
            f"turns), not {rotations!r}."
        )
    if has_orientation_head(config) and rotations != ORIENTATIONS:
        raise UserError(
            f"config.orientation_weight={config.orientation_weight} trains an orientation head "
            f"that chooses among the {ORIENTATIONS} quarter turns at test time: set "
            f"config.eval_rotations={ORIENTATIONS}, not {rotations!r}."
        )
    mirrors = (False, True) if config.get("eval_flip", False) else (False,)
    tilts = (0.0, tilt_degrees, -tilt_degrees) if tilt_degrees else (0.0,)
    # What a tilt uncovers is black as the model sees it, as train.step.normalize maps a 0 pixel.
    fill = (
        tuple(-np.asarray(config.data.mean) / np.asarray(config.data.std))
        if tilt_degrees
        else (0.0,)
    )
    return tuple(
        View(turn * 4 // rotations, mirrored, degrees, fill)
        for turn in range(rotations)
        for mirrored in mirrors
        for degrees in tilts
    )


def has_orientation_head(config: ml_collections.ConfigDict) -> bool:
    """Whether the run's model ends in ORIENTATIONS orientation logits after its class logits."""
    return config.get("orientation_weight", 0.0) > 0


def turns_from_upright(view: View, image_turns: np.ndarray) -> np.ndarray:
    """How many anticlockwise quarter turns from upright this view of an image is, for an image
    `image_turns` from upright: their sum, or with the mirror (which reverses turns) the
    difference."""
    direction = -1 if view.mirrored else 1
    return (view.quarter_turns + direction * image_turns) % ORIENTATIONS


def combine(
    outputs: Sequence[jnp.ndarray], views: tuple[View, ...], orientation_head: bool = False
) -> jnp.ndarray:
    """Class logits from the model's outputs (batch, logits) on each of `views`: their mean, or
    with an orientation head the class logits weighted by the probability that the view is
    upright. Every view's orientation logits vote on how far the image itself is turned (each
    view is a known turn of it), and the votes multiply."""
    if not orientation_head:
        return sum(outputs) / len(outputs)
    image_turns = np.arange(ORIENTATIONS)
    evidence = sum(
        jax.nn.log_softmax(out[:, -ORIENTATIONS:])[:, turns_from_upright(view, image_turns)]
        for view, out in zip(views, outputs, strict=True)
    )
    image_turn = jax.nn.softmax(evidence)  # (batch, turns of the image)
    upright = [image_turn[:, np.argmin(turns_from_upright(view, image_turns))] for view in views]
    total = sum(upright)
    return sum(
        (w / total)[:, None] * out[:, :-ORIENTATIONS]
        for w, out in zip(upright, outputs, strict=True)
    )


def average_logits(
    model, images: jnp.ndarray, views: tuple[View, ...], orientation_head: bool = False
) -> jnp.ndarray:
    """The model's class logits over the views of normalised images (see combine)."""
    return combine([model(view.apply(images)) for view in views], views, orientation_head)


def describe(views: tuple[View, ...], orientation_head: bool = False) -> str:
    """For logs and export metadata: 'upright', 'upright and mirrored, 4 quarter turns each',
    'upright, each also tilted by ±30 degrees'."""
    turns = len({view.quarter_turns for view in views})
    mirrored = any(view.mirrored for view in views)
    text = "upright and mirrored" if mirrored else "upright"
    text = text if turns == 1 else f"{text}, {turns} evenly spaced quarter turns each"
    tilt_degrees = max(view.tilt_degrees for view in views)
    text = f"{text}, each also tilted by ±{tilt_degrees:g} degrees" if tilt_degrees else text
    return f"{text}, weighted by the orientation head" if orientation_head else text
