"""Geometric basics: resize, center crop, padded random crop, horizontal flip."""

import tensorflow as tf

from recog.registry import AUGMENTATIONS


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


@AUGMENTATIONS.register("resize")
def resize(size: int | tuple[int, int], method: str = "bilinear"):
    """Resizes to `size` (an int gives a square), ignoring the aspect ratio."""
    height, width = _size(size)

    def op(image, seed):
        del seed
        return tf.image.resize(image, (height, width), method=method, antialias=True)

    return op


@AUGMENTATIONS.register("resize_small")
def resize_small(size: int, method: str = "bilinear"):
    """Resizes so that the shorter side is `size`, keeping the aspect ratio."""

    def op(image, seed):
        del seed
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = size / tf.reduce_min(shape)
        new_shape = tf.cast(tf.round(shape * scale), tf.int32)
        return tf.image.resize(image, new_shape, method=method, antialias=True)

    return op


@AUGMENTATIONS.register("center_crop")
def center_crop(size: int | tuple[int, int]):
    """Crops the central `size` window (the image must be at least that large)."""
    height, width = _size(size)

    def op(image, seed):
        del seed
        top = (tf.shape(image)[0] - height) // 2
        left = (tf.shape(image)[1] - width) // 2
        return image[top : top + height, left : left + width]

    return op


@AUGMENTATIONS.register("pad_crop")
def pad_crop(pad: int):
    """Pads `pad` pixels of zeros on each side, then crops back to the original size at random."""

    def op(image, seed):
        shape = tf.shape(image)
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        return tf.image.stateless_random_crop(padded, shape, seed=seed)

    return op


@AUGMENTATIONS.register("flip_lr")
def flip_lr():
    """Mirrors left-right with probability 1/2."""

    def op(image, seed):
        return tf.image.stateless_random_flip_left_right(image, seed=seed)

    return op
