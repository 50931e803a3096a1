"""Example plugin: a `solarize` augmentation, written only against recog's public registry API.

Every module in this folder is loaded at start-up. Use it from a config:
    config.data.train_pipeline = "pad_crop(4)|flip_lr|solarize(192, p=0.2)"
"""

import tensorflow as tf

from recog import AUGMENTATIONS


@AUGMENTATIONS.register("solarize")
def solarize(threshold: int = 128, p: float = 1.0):
    """Inverts the pixels at or above `threshold` (0..255), with probability `p`."""

    def op(image, seed):
        image = tf.cast(image, tf.float32)
        inverted = tf.where(image >= threshold, 255.0 - image, image)
        apply = tf.random.stateless_uniform([], seed=seed) < p
        return tf.where(apply, inverted, image)

    return op
