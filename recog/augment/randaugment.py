"""RandAugment (Cubuk et al. 2020): `num_layers` operations drawn uniformly from 14, each at one
shared `magnitude` on the paper's 0..10 scale (9 is the usual ImageNet setting).

The operations follow PIL's definitions, as the paper's do: identity, auto_contrast, equalize,
rotate (up to 30 degrees), solarize, color, posterize, contrast, brightness, sharpness, shear_x,
shear_y (up to 0.3), translate_x, translate_y (up to 45% of the side). Every magnitude-dependent
operation gets stronger as the magnitude grows (solarize's threshold falls to 0, posterize keeps as
few as 4 bits, enhancement factors reach 1 +- 0.9), and the signed ones go either way at random.
Geometric ones fill uncovered pixels with grey (128).
"""

import functools

import tensorflow as tf

from recog.augment import device_randaugment
from recog.augment.geometry import rotation_matrix, warp
from recog.errors import UserError
from recog.registry import AUGMENTATIONS

FILL = 128.0


def _blend(degenerate, image, factor):
    """PIL's ImageEnhance: factor 0 gives `degenerate`, 1 the image, beyond 1 extrapolates."""
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _grey(image):
    """The image's luminance, with as many channels as the image (RGB unless known to be 1)."""
    if image.shape[-1] == 1:
        return image
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _equalize_channel(channel):
    """PIL's ImageOps.equalize for one channel of integer values 0..255."""
    values = tf.cast(channel, tf.int32)
    histogram = tf.histogram_fixed_width(values, [0, 255], nbins=256)
    last = tf.gather(histogram, tf.reduce_max(tf.where(histogram > 0)))
    step = (tf.reduce_sum(histogram) - last) // 255
    lookup = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
    lookup = tf.clip_by_value(tf.concat([[0], lookup[:-1]], 0), 0, 255)
    return tf.where(step > 0, tf.cast(tf.gather(lookup, values), tf.float32), channel)


def _smooth(image):
    """PIL's SMOOTH filter (the degenerate image of Sharpness); the border stays as it was."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, tf.shape(image)[-1], 1])
    inner = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    padding = [[1, 1], [1, 1], [0, 0]]
    is_inner = tf.pad(tf.ones_like(inner, tf.bool), padding)
    return tf.where(is_inner, tf.pad(inner, padding), image)


# Each operation maps (image float32 0..255, strength 0..1, sign +-1) to an image.
def _identity(image, strength, sign):
    return image


def _auto_contrast(image, strength, sign):
    """Stretches each channel to the full 0..255 range."""
    low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    return tf.where(high > low, (image - low) * (255.0 / tf.maximum(high - low, 1.0)), image)


def _equalize(image, strength, sign):
    channels_first = tf.map_fn(_equalize_channel, tf.transpose(image, [2, 0, 1]))
    return tf.ensure_shape(tf.transpose(channels_first, [1, 2, 0]), image.shape)


def _rotate(image, strength, sign):
    return warp(image, rotation_matrix(image, sign * strength * 30.0), "constant", FILL)


def _solarize(image, strength, sign):
    return tf.where(image >= 256.0 * (1.0 - strength), 255.0 - image, image)


def _posterize(image, strength, sign):
    step = 2.0 ** tf.round(4.0 * strength)
    return tf.floor(image / step) * step


def _color(image, strength, sign):
    return _blend(_grey(image), image, 1.0 + sign * 0.9 * strength)


def _contrast(image, strength, sign):
    mean = tf.reduce_mean(_grey(image))
    return _blend(mean, image, 1.0 + sign * 0.9 * strength)


def _brightness(image, strength, sign):
    return _blend(tf.zeros_like(image), image, 1.0 + sign * 0.9 * strength)


def _sharpness(image, strength, sign):
    return _blend(_smooth(image), image, 1.0 + sign * 0.9 * strength)


def _shear_x(image, strength, sign):
    return warp(image, [1.0, sign * strength * 0.3, 0.0, 0.0, 1.0, 0.0], "constant", FILL)


def _shear_y(image, strength, sign):
    return warp(image, [1.0, 0.0, 0.0, sign * strength * 0.3, 1.0, 0.0], "constant", FILL)


def _translate_x(image, strength, sign):
    shift = sign * strength * 0.45 * tf.cast(tf.shape(image)[1], tf.float32)
    return warp(image, [1.0, 0.0, shift, 0.0, 1.0, 0.0], "constant", FILL)


def _translate_y(image, strength, sign):
    shift = sign * strength * 0.45 * tf.cast(tf.shape(image)[0], tf.float32)
    return warp(image, [1.0, 0.0, 0.0, 0.0, 1.0, shift], "constant", FILL)


OPERATIONS = (
    _identity,
    _auto_contrast,
    _equalize,
    _rotate,
    _solarize,
    _color,
    _posterize,
    _contrast,
    _brightness,
    _sharpness,
    _shear_x,
    _shear_y,
    _translate_x,
    _translate_y,
)


@AUGMENTATIONS.register("randaugment")
def randaugment(num_layers: int = 2, magnitude: float = 9.0):
    """RandAugment (Cubuk et al. 2020): `num_layers` random ops of 14, at `magnitude` 0..10.

    In config.data.batch_pipeline it runs on the device (recog.augment.device_randaugment).
    """
    if not 0 <= magnitude <= 10:
        raise UserError(f"randaugment: magnitude is on a 0..10 scale, not {magnitude}.")
    strength = magnitude / 10.0

    def op(image, seed):
        image = tf.cast(image, tf.float32)
        for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers)):
            choice_seed, sign_seed = tf.unstack(
                tf.random.experimental.stateless_split(layer_seed, 2)
            )
            index = tf.random.stateless_uniform([], choice_seed, 0, len(OPERATIONS), dtype=tf.int32)
            sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
            branches = [functools.partial(fn, image, strength, sign) for fn in OPERATIONS]
            image = tf.switch_case(index, branches)
        return image

    op.batched = device_randaugment.batched(num_layers, magnitude)
    return op
