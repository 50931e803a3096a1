"""Affine warps (rotation, shear, translation) through TensorFlow's projective-transform kernel."""

import math

import tensorflow as tf

from recog.errors import UserError
from recog.registry import AUGMENTATIONS

FILL_MODES = ("reflect", "wrap", "constant", "nearest")


def warp(image, matrix, fill_mode: str = "constant", fill_value: float = 0.0):
    """Each output pixel (x, y) takes the input at (a0 x + a1 y + a2, b0 x + b1 y + b2), for
    matrix = [a0, a1, a2, b0, b1, b2] (bilinear); pixels from outside follow `fill_mode`."""
    matrix = tf.cast(tf.stack(matrix), tf.float32)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None],
        transforms=tf.concat([matrix, tf.zeros([2])], 0)[None],
        output_shape=tf.shape(image)[:2],
        fill_value=fill_value,
        interpolation="BILINEAR",
        fill_mode=fill_mode.upper(),
    )[0]
    warped.set_shape(image.shape)
    return warped


def rotation_matrix(image, degrees):
    """The warp matrix that rotates `image` by `degrees` about its centre."""
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    height, width = tf.unstack(tf.cast(tf.shape(image)[:2], tf.float32) - 1.0)
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    return [cos, -sin, x_offset, sin, cos, y_offset]


@AUGMENTATIONS.register("random_rotation")
def random_rotation(max_degrees: float, fill_mode: str = "reflect", fill_value: float = 0.0):
    """Rotates by a random angle in [-max_degrees, max_degrees]; corners filled by `fill_mode`.

    The fill modes: reflect, wrap, nearest, or constant (with `fill_value`).
    """
    if fill_mode not in FILL_MODES:
        raise UserError(
            f"random_rotation: fill_mode must be one of {FILL_MODES}, not {fill_mode!r}."
        )

    def op(image, seed):
        degrees = tf.random.stateless_uniform([], seed, -max_degrees, max_degrees)
        return warp(image, rotation_matrix(image, degrees), fill_mode, fill_value)

    return op
