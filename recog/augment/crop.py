"""Random crops that sample a box of the image: Inception-style resized crops, random erasing."""

import tensorflow as tf

from recog.augment import pipeline
from recog.augment.basic import _size
from recog.errors import UserError
from recog.registry import AUGMENTATIONS


def _check_ranges(name, area_min, area_max, area_limit, ratio_min, ratio_max):
    if not (0 < area_min <= area_max <= area_limit and 0 < ratio_min <= ratio_max):
        raise UserError(
            f"{name}: need 0 < area_min <= area_max <= {area_limit:g} and 0 < ratio_min <= "
            f"ratio_max; got area {area_min}..{area_max}, ratio {ratio_min}..{ratio_max}."
        )


def _sample_box(image_shape, seed, area_range, aspect_ratio_range):
    """(top-left, size) of a box covering `area_range` of an image of `image_shape` with
    width/height in `aspect_ratio_range`; the whole image when 10 attempts find none."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        image_shape,
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return begin, size


class InceptionCrop:
    """A random box of the image resized to a fixed size; see `inception_crop`."""

    def __init__(self, size, area_range, ratio_range, method, antialias):
        self.size, self.area_range, self.ratio_range = size, area_range, ratio_range
        self.method, self.antialias = method, antialias

    def _resize(self, crop):
        # Same output as from uint8, but TF's bilinear kernel runs 1.5x faster on float32 input.
        crop = tf.cast(crop, tf.float32)
        return tf.image.resize(crop, self.size, method=self.method, antialias=self.antialias)

    def _crop(self, image, seed):
        begin, box = _sample_box(tf.shape(image), seed, self.area_range, self.ratio_range)
        return tf.slice(image, begin, box)

    def __call__(self, image, seed):
        return self._resize(self._crop(image, seed))

    def decode_and_apply(self, encoded, channels, seed):
        """The same crop from encoded bytes. A JPEG is decoded only inside the box (libjpeg skips
        the rest), which also makes the box's edges differ from a full decode by a few levels
        where the colour planes are upsampled; other formats are decoded whole, then cropped."""

        def from_jpeg():
            height_width = tf.image.extract_jpeg_shape(encoded)[:2]  # reads the header alone
            image_shape = tf.concat([height_width, [channels]], 0)
            begin, box = _sample_box(image_shape, seed, self.area_range, self.ratio_range)
            window = tf.stack([begin[0], begin[1], box[0], box[1]])
            return tf.image.decode_and_crop_jpeg(encoded, window, channels=channels)

        def from_other():
            return self._crop(pipeline.decode(encoded, channels), seed)

        crop = tf.cond(tf.io.is_jpeg(encoded), from_jpeg, from_other)
        crop.set_shape([None, None, channels])
        return self._resize(crop)


@AUGMENTATIONS.register("inception_crop")
def inception_crop(
    size: int | tuple[int, int],
    area_min: float = 0.08,
    area_max: float = 1.0,
    ratio_min: float = 3 / 4,
    ratio_max: float = 4 / 3,
    method: str = "bilinear",
    antialias: bool = True,
):
    """Random-resized crop (Inception, ResNet training): a random box, resized to `size`.

    The box covers area_min..area_max of the image, with width/height in ratio_min..ratio_max.
    From encoded JPEG bytes it decodes only the box. `antialias=False` resizes as the Flax
    ImageNet example and big_vision do, at about half the host's cost per image (figures in
    benchmarks/README.md).
    """
    _check_ranges("inception_crop", area_min, area_max, 1.0, ratio_min, ratio_max)
    return InceptionCrop(
        _size(size), (area_min, area_max), (ratio_min, ratio_max), method, antialias
    )


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
        begin, box = _sample_box(
            tf.shape(image), box_seed, (area_min, area_max), (ratio_min, ratio_max)
        )
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
