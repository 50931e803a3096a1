"""Random crops that sample a box of the image: Inception-style resized crops, random erasing."""

import tensorflow as tf

from recog.augment.basic import _size
from recog.errors import UserError
from recog.registry import AUGMENTATIONS


def _check_ranges(name, area_min, area_max, area_limit, ratio_min, ratio_max):
    if not (0 < area_min <= area_max <= area_limit and 0 < ratio_min <= ratio_max):
        raise UserError(
            f"{name}: need 0 < area_min <= area_max <= {area_limit:g} and 0 < ratio_min <= "
            f"ratio_max; got area {area_min}..{area_max}, ratio {ratio_min}..{ratio_max}."
        )


def _sample_box(image, seed, area_range, aspect_ratio_range):
    """(top-left, size) of a box covering `area_range` of the image with width/height in
    `aspect_ratio_range`; the whole image when 10 attempts find none."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


@AUGMENTATIONS.register("inception_crop")
def inception_crop(
    size: int | tuple[int, int],
    area_min: float = 0.08,
    area_max: float = 1.0,
    ratio_min: float = 3 / 4,
    ratio_max: float = 4 / 3,
    method: str = "bilinear",
):
    """Random-resized crop (Inception, ResNet training): a random box, resized to `size`.

    The box covers area_min..area_max of the image, with width/height in ratio_min..ratio_max.
    """
    height, width = _size(size)
    _check_ranges("inception_crop", area_min, area_max, 1.0, ratio_min, ratio_max)

    def op(image, seed):
        begin, box = _sample_box(image, seed, (area_min, area_max), (ratio_min, ratio_max))
        crop = tf.slice(image, begin, box)
        return tf.image.resize(crop, (height, width), method=method, antialias=True)

    return op


@AUGMENTATIONS.register("random_erasing")
def random_erasing(
    p: float = 0.25,
    area_min: float = 0.02,
    area_max: float = 1 / 3,
    ratio_min: float = 0.3,
    ratio_max: float = 3.3,
    value: float | None = None,
):
    """With probability `p`, fills a random box with noise, or `value` (Zhong et al. 2017).

    The box covers area_min..area_max of the image, with width/height in ratio_min..ratio_max; the
    noise is uniform in 0..255 per pixel and channel.
    """
    _check_ranges("random_erasing", area_min, area_max, 0.99, ratio_min, ratio_max)

    def op(image, seed):
        box_seed, apply_seed, noise_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 3)
        )
        begin, box = _sample_box(image, box_seed, (area_min, area_max), (ratio_min, ratio_max))
        shape = tf.shape(image)
        found = tf.reduce_any(box[:2] < shape[:2])  # else the sampler fell back to the whole image
        apply = found & (tf.random.stateless_uniform([], apply_seed) < p)
        rows = tf.range(shape[0])[:, None]
        cols = tf.range(shape[1])[None, :]
        inside = (
            (rows >= begin[0])
            & (rows < begin[0] + box[0])
            & (cols >= begin[1])
            & (cols < begin[1] + box[1])
        )
        image = tf.cast(image, tf.float32)
        if value is None:
            fill = tf.random.stateless_uniform(shape, noise_seed, 0.0, 255.0)
        else:
            fill = tf.fill(shape, tf.constant(value, tf.float32))
        return tf.where(inside[:, :, None] & apply, fill, image)

    return op
