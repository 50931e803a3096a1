"""Photometric augmentation: random brightness, contrast, saturation and hue."""

import tensorflow as tf

from recog.errors import UserError
from recog.registry import AUGMENTATIONS


@AUGMENTATIONS.register("color_jitter")
def color_jitter(
    brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1
):
    """Random brightness, contrast, saturation (factors 1 +- x) and hue shift (+- hue), in order.

    Brightness, contrast and saturation are scaled by random factors in [1 - x, 1 + x], and the hue
    shifted by a random fraction of the colour circle in [-hue, hue] (the ranges of torchvision's
    ColorJitter). A value of 0 leaves that property alone; saturation and hue leave
    single-channel images alone.
    """
    if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
        raise UserError(
            f"color_jitter: need amounts >= 0 and hue <= 0.5; got brightness {brightness}, "
            f"contrast {contrast}, saturation {saturation}, hue {hue}."
        )

    def op(image, seed):
        seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
        image = tf.cast(image, tf.float32) / 255.0
        colour = image.shape[-1] != 1  # unknown counts as RGB

        def factor(amount, seed):
            return tf.random.stateless_uniform([], seed, 1.0 - amount, 1.0 + amount)

        if brightness:
            image = tf.clip_by_value(image * factor(brightness, seeds[0]), 0.0, 1.0)
        if contrast:  # around each channel's mean
            image = tf.image.adjust_contrast(image, factor(contrast, seeds[1]))
            image = tf.clip_by_value(image, 0.0, 1.0)
        if saturation and colour:
            image = tf.image.adjust_saturation(image, factor(saturation, seeds[2]))
        if hue and colour:
            image = tf.image.adjust_hue(image, tf.random.stateless_uniform([], seeds[3], -hue, hue))
        return image * 255.0

    return op
