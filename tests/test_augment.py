"""The registered augmentations: tf.data ops per image, and mixup/cutmix on device batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from recog import UserError, augment
from recog.augment import device_randaugment, randaugment
from recog.augment.batch import parse_batch

IMAGE = tf.constant(np.random.default_rng(0).integers(0, 256, (36, 48, 3)), tf.uint8)


def run(spec, image=IMAGE, seed=(1, 2)):
    return augment.apply(augment.parse(spec), image, tf.constant(seed, tf.int64)).numpy()


@pytest.mark.parametrize(
    "spec, shape",
    [
        ("inception_crop(24)", (24, 24, 3)),
        ("inception_crop((16, 20), area_min=0.5, ratio_min=0.5, ratio_max=2.0)", (16, 20, 3)),
        ("color_jitter(0.4, 0.4, 0.4, 0.1)", (36, 48, 3)),
        ("random_rotation(30)", (36, 48, 3)),
        ("random_rotation(15, fill_mode='constant', fill_value=128)", (36, 48, 3)),
        ("randaugment(2, 9)", (36, 48, 3)),
        ("random_erasing(p=1.0)", (36, 48, 3)),
        (
            "inception_crop(32)|flip_lr|randaugment(3, 10)|color_jitter|random_erasing(0.5)",
            (32, 32, 3),
        ),
    ],
)
def test_shape_range_and_determinism(spec, shape):
    outputs = [run(spec, seed=(0, i)) for i in range(4)]
    assert all(o.shape == shape and o.dtype == np.uint8 for o in outputs), spec
    np.testing.assert_array_equal(outputs[0], run(spec, seed=(0, 0)))
    assert len({o.tobytes() for o in outputs}) > 1, "every seed gave the same output"


def test_single_channel_images_keep_one_channel():
    grey = IMAGE[..., :1]
    for spec in ["color_jitter", "randaugment(2, 9)", "random_rotation(10)", "random_erasing(1.0)"]:
        assert run(spec, grey).shape == (36, 48, 1), spec


def test_inside_a_tf_data_pipeline_of_unknown_image_sizes():
    ops = augment.parse("inception_crop(16)|randaugment(2, 9)|color_jitter|random_rotation(20)")

    def grey_image(size):
        return tf.zeros(tf.concat([size, [3]], 0), tf.uint8) + 100

    def augmented(i, image):
        return augment.apply(ops, image, tf.stack([tf.constant(7, tf.int64), i]))

    sizes = tf.data.Dataset.from_tensor_slices([[30, 40], [50, 20]])
    outputs = sizes.map(grey_image).enumerate().map(augmented)
    assert [o.shape for o in outputs.as_numpy_iterator()] == [(16, 16, 3)] * 2


def test_neutral_settings_leave_the_image_alone():
    np.testing.assert_array_equal(run("color_jitter(0, 0, 0, 0)"), IMAGE)
    np.testing.assert_array_equal(run("random_erasing(p=0.0)"), IMAGE)
    np.testing.assert_array_equal(run("random_rotation(0)"), IMAGE)
    np.testing.assert_array_equal(
        run("inception_crop((36, 48), area_min=1.0, ratio_min=0.75, ratio_max=1.5)"), IMAGE
    )


def test_random_erasing_covers_part_of_the_image():
    erased = run("random_erasing(p=1.0, area_min=0.1, area_max=0.3, value=0)", IMAGE + 1) == 0
    assert 0.1 * 36 * 48 * 3 <= erased.sum() <= 0.3 * 36 * 48 * 3


def test_randaugment_operations_match_pil():
    pil = Image.fromarray(IMAGE.numpy())
    image = tf.cast(IMAGE, tf.float32)
    cases = [
        (randaugment._equalize(image, 0.0, 1.0), ImageOps.equalize(pil)),
        (randaugment._solarize(image, 0.5, 1.0), ImageOps.solarize(pil, 128)),
        (randaugment._posterize(image, 1.0, 1.0), ImageOps.posterize(pil, 4)),
        (randaugment._auto_contrast(image, 0.0, 1.0), ImageOps.autocontrast(pil)),
        (randaugment._color(image, 5 / 9, 1.0), ImageEnhance.Color(pil).enhance(1.5)),
        (randaugment._contrast(image, 5 / 9, -1.0), ImageEnhance.Contrast(pil).enhance(0.5)),
        (randaugment._brightness(image, 5 / 9, 1.0), ImageEnhance.Brightness(pil).enhance(1.5)),
        (randaugment._sharpness(image, 1.0, 1.0), ImageEnhance.Sharpness(pil).enhance(1.9)),
    ]
    for ours, theirs in cases:
        np.testing.assert_allclose(np.round(ours), np.asarray(theirs), atol=1)


def test_bad_parameters_are_user_errors():
    for spec in [
        "randaugment(2, 11)",
        "random_rotation(10, fill_mode='mirror')",
        "inception_crop(8, area_min=0)",
        "random_erasing(area_max=1.0)",
        "color_jitter(hue=0.7)",
    ]:
        with pytest.raises(UserError):
            augment.parse(spec)


BATCH = jax.random.uniform(jax.random.key(0), (8, 12, 16, 3)) * 255
TARGETS = jax.nn.one_hot(jnp.arange(8) % 4, 4)


@pytest.mark.parametrize("spec", ["mixup(0.2)", "cutmix(1.0)", "mixup(0.4)|cutmix"])
def test_batch_augmentations(spec):
    op = jax.jit(parse_batch(spec).mix)
    images, targets = op(BATCH, TARGETS, jax.random.key(1))
    assert images.shape == BATCH.shape and targets.shape == TARGETS.shape
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    again = op(BATCH, TARGETS, jax.random.key(1))
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(targets, again[1])
    others = [op(BATCH, TARGETS, jax.random.key(k))[0] for k in range(2, 6)]
    assert any(not np.array_equal(images, other) for other in others)


def test_mixup_and_cutmix_mix_images_and_targets_alike():
    neighbour = jnp.roll(BATCH, 1, axis=0)
    images, targets = parse_batch("mixup(1.0)").mix(BATCH, TARGETS, jax.random.key(3))
    own = targets[0, 0]  # example 0 has label 0, its neighbour label 3
    np.testing.assert_allclose(images, own * BATCH + (1 - own) * neighbour, rtol=1e-5, atol=1e-3)

    images, targets = parse_batch("cutmix(1.0)").mix(BATCH, TARGETS, jax.random.key(3))
    from_neighbour = np.asarray((images == neighbour) & (images != BATCH))
    assert np.all((images == BATCH) | (images == neighbour))
    np.testing.assert_allclose(targets[0, 3], from_neighbour[0].mean(), rtol=1e-6)


def test_parse_batch():
    images, targets = parse_batch("").mix(BATCH, TARGETS, jax.random.key(0))
    assert images is BATCH and targets is TARGETS
    both = parse_batch("randaugment(2, 9)|mixup(0.2)|cutmix")
    assert len(both.image_ops) == 1 and len(both.mix_ops) == 2
    with pytest.raises(UserError, match="'flip_lr' is an augmentation of single images"):
        parse_batch("mixup|flip_lr")
    with pytest.raises(UserError, match="unknown augmentation 'mixpu'"):
        parse_batch("mixpu(0.2)")


@pytest.mark.parametrize("index", range(len(randaugment.OPERATIONS)))
def test_randaugment_on_the_device_matches_the_tf_data_operations(index):
    tf_op, device_op = randaugment.OPERATIONS[index], device_randaugment.OPERATIONS[index]
    assert tf_op.__name__ == device_op.__name__
    rows, cols = np.mgrid[0:24, 0:30]
    smooth = np.stack([rows * 9, cols * 7, (rows + cols) * 4], -1) % 256
    noise = np.random.default_rng(index).integers(0, 256, (24, 30, 3))
    for image in (smooth.astype(np.float32), noise.astype(np.float32)):
        for strength, sign in [(0.9, 1.0), (0.9, -1.0), (0.2, 1.0)]:
            expected = tf_op(tf.constant(image), strength, sign)
            served = jax.jit(device_op)(jnp.asarray(image), strength, sign)
            np.testing.assert_allclose(served, expected, atol=5e-3)  # bilinear weights' rounding


def test_randaugment_on_the_device_draws_operations_per_image():
    pipeline = parse_batch("randaugment(2, 9)")
    images = jnp.asarray(np.tile(np.asarray(BATCH[:1]), (8, 1, 1, 1)))  # one image, 8 times
    augment_images = jax.jit(pipeline.augment_images)
    served = augment_images(images.astype(jnp.uint8), jax.random.key(0))
    assert served.shape == images.shape and served.dtype == jnp.float32
    assert float(served.min()) >= 0 and float(served.max()) <= 255
    assert len({np.asarray(image).tobytes() for image in served}) > 4  # each its own operations
    np.testing.assert_array_equal(
        served, augment_images(images.astype(jnp.uint8), jax.random.key(0))
    )
    assert not np.array_equal(served, augment_images(images.astype(jnp.uint8), jax.random.key(1)))


def test_randaugment_on_the_device_lowers_for_accelerators():
    augment_images = jax.jit(parse_batch("randaugment(2, 9)").augment_images)
    images = jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.uint8)
    for platform in ("tpu", "cuda"):
        text = (
            augment_images.trace(images, jax.random.key(0))
            .lower(lowering_platforms=(platform,))
            .as_text()
        )
        assert "stablehlo.gather" in text and "stablehlo.case" not in text  # vmapped: selects
