"""RandAugment on the device: the 14 operations of recog.augment.randaugment in JAX, for a batch.

`randaugment(2, 9)` listed in config.data.batch_pipeline runs here, inside the jit-compiled train
step, instead of in the host's tf.data pipeline: on an accelerator it costs a few element-wise
passes over the batch, where the host would need several cores per accelerator for it. Each
image draws its own operations and signs; the operations match the tf.data ones (PIL's
definitions) and are tested against them.

Images are float32 NHWC with values 0..255, before normalisation.
"""

import jax
import jax.numpy as jnp
import numpy as np

FILL = 128.0
GREY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)  # tf.image.rgb_to_grayscale's


def _blend(degenerate, image, factor):
    return jnp.clip(degenerate + factor * (image - degenerate), 0.0, 255.0)


def _grey(image):
    if image.shape[-1] == 1:
        return image
    return jnp.broadcast_to((image @ GREY_WEIGHTS)[..., None], image.shape)


def warp(image, matrix, fill=FILL):
    """Output pixel (x, y) takes the input at (a0 x + a1 y + a2, b0 x + b1 y + b2), bilinear,
    with `fill` (per channel, or one value) outside the image: TensorFlow's
    ImageProjectiveTransformV3 with constant fill."""
    height, width, _ = image.shape
    a0, a1, a2, b0, b1, b2 = matrix
    ys, xs = jnp.mgrid[0:height, 0:width].astype(jnp.float32)
    x, y = a0 * xs + a1 * ys + a2, b0 * xs + b1 * ys + b2
    x0, y0 = jnp.floor(x), jnp.floor(y)

    def read(row, col):
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        rows = jnp.clip(row, 0, height - 1).astype(jnp.int32)
        cols = jnp.clip(col, 0, width - 1).astype(jnp.int32)
        return jnp.where(inside[..., None], image[rows, cols], fill)

    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    top = (1 - wx) * read(y0, x0) + wx * read(y0, x0 + 1)
    bottom = (1 - wx) * read(y0 + 1, x0) + wx * read(y0 + 1, x0 + 1)
    return (1 - wy) * top + wy * bottom


def rotation_matrix(image, degrees):
    """The warp matrix that turns `image` anticlockwise by `degrees` about its centre
    (recog.augment.geometry.rotation_matrix in JAX)."""
    radians = degrees * (jnp.pi / 180.0)
    height, width = image.shape[0] - 1.0, image.shape[1] - 1.0
    cos, sin = jnp.cos(radians), jnp.sin(radians)
    x_offset = (width - (cos * width - sin * height)) / 2.0
    y_offset = (height - (sin * width + cos * height)) / 2.0
    return (cos, -sin, x_offset, sin, cos, y_offset)


def _equalize_channel(channel):
    values = channel.astype(jnp.int32)
    histogram = jnp.zeros(256, jnp.int32).at[values.ravel()].add(1)
    last = histogram[255 - jnp.argmax(histogram[::-1] > 0)]
    step = (histogram.sum() - last) // 255
    lookup = (jnp.cumsum(histogram) + step // 2) // jnp.maximum(step, 1)
    lookup = jnp.clip(jnp.concatenate([jnp.zeros(1, lookup.dtype), lookup[:-1]]), 0, 255)
    return jnp.where(step > 0, lookup[values].astype(jnp.float32), channel)


def _smooth(image):
    """PIL's SMOOTH filter, the border left as it was."""
    height, width = image.shape[:2]
    total = sum(
        image[1 + dy : height - 1 + dy, 1 + dx : width - 1 + dx]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )
    inner = (total + 4.0 * image[1:-1, 1:-1]) / 13.0
    return image.at[1:-1, 1:-1].set(inner)


# Each operation maps (image float32 0..255, strength 0..1, sign +-1) to an image.
def _identity(image, strength, sign):
    return image


def _auto_contrast(image, strength, sign):
    low = image.min(axis=(0, 1), keepdims=True)
    high = image.max(axis=(0, 1), keepdims=True)
    return jnp.where(high > low, (image - low) * (255.0 / jnp.maximum(high - low, 1.0)), image)


def _equalize(image, strength, sign):
    return jax.vmap(_equalize_channel, in_axes=-1, out_axes=-1)(image)


def _rotate(image, strength, sign):
    return warp(image, rotation_matrix(image, sign * strength * 30.0))


def _solarize(image, strength, sign):
    return jnp.where(image >= 256.0 * (1.0 - strength), 255.0 - image, image)


def _color(image, strength, sign):
    return _blend(_grey(image), image, 1.0 + sign * 0.9 * strength)


def _posterize(image, strength, sign):
    step = 2.0 ** jnp.round(4.0 * strength)
    return jnp.floor(image / step) * step


def _contrast(image, strength, sign):
    return _blend(_grey(image).mean(), image, 1.0 + sign * 0.9 * strength)


def _brightness(image, strength, sign):
    return _blend(0.0, image, 1.0 + sign * 0.9 * strength)


def _sharpness(image, strength, sign):
    return _blend(_smooth(image), image, 1.0 + sign * 0.9 * strength)


def _shear_x(image, strength, sign):
    return warp(image, (1.0, sign * strength * 0.3, 0.0, 0.0, 1.0, 0.0))


def _shear_y(image, strength, sign):
    return warp(image, (1.0, 0.0, 0.0, sign * strength * 0.3, 1.0, 0.0))


def _translate_x(image, strength, sign):
    return warp(image, (1.0, 0.0, sign * strength * 0.45 * image.shape[1], 0.0, 1.0, 0.0))


def _translate_y(image, strength, sign):
    return warp(image, (1.0, 0.0, 0.0, 0.0, 1.0, sign * strength * 0.45 * image.shape[0]))


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


def apply_operation(index, image, strength, sign):
    """Operation `index` of OPERATIONS (the order of recog.augment.randaugment's)."""
    return jax.lax.switch(index, OPERATIONS, image, strength, sign)


def batched(num_layers: int, magnitude: float):
    """images (N, H, W, C) float32 0..255, key -> images, each with its own random operations."""
    strength = magnitude / 10.0

    def one_image(image, key):
        for layer_key in jax.random.split(key, num_layers):
            choice_key, sign_key = jax.random.split(layer_key)
            index = jax.random.randint(choice_key, (), 0, len(OPERATIONS))
            sign = jnp.where(jax.random.uniform(sign_key) < 0.5, -1.0, 1.0)
            image = apply_operation(index, image, strength, sign)
        return image

    def op(images, key):
        return jax.vmap(one_image)(images, jax.random.split(key, images.shape[0]))

    return op
