import numpy as np
import pytest
import tensorflow as tf

from recog import UserError, augment, data, plugins


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_digits_is_a_prepared_tfds_dataset(digits_source):
    assert digits_source.builder.name == "sklearn_digits"
    assert digits_source.builder.is_prepared()
    assert digits_source.num_examples("train") == 1437
    assert digits_source.num_examples("test") == 360
    assert digits_source.class_names == [str(d) for d in range(10)]
    assert data.image_channels(digits_source) == 1
    example = next(digits_source.read("test").as_numpy_iterator())
    assert example["image"].shape == (8, 8, 1) and example["image"].dtype == np.uint8
    assert example["image"].max() > 200  # scaled from 0..16 to 0..255


def test_train_stream_is_deterministic_and_resumes_exactly(digits_source):
    kwargs = dict(global_batch_size=64, pipeline="pad_crop(1)|flip_lr", seed=3)
    uninterrupted = take(data.train_batches(digits_source, "train", **kwargs), 30)
    again = take(data.train_batches(digits_source, "train", **kwargs), 30)
    resumed = take(data.train_batches(digits_source, "train", start_step=25, **kwargs), 5)
    for a, b in zip(uninterrupted, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    for a, b in zip(uninterrupted[25:], resumed, strict=True):  # crosses the epoch at step 22
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    other_seed = next(data.train_batches(digits_source, "train", **{**kwargs, "seed": 4}))
    assert not np.array_equal(other_seed["label"], uninterrupted[0]["label"])


def test_each_epoch_visits_every_example_once(digits_source):
    batches = take(
        data.train_batches(digits_source, "train", global_batch_size=479, pipeline="", seed=0), 6
    )
    images = np.concatenate([b["image"] for b in batches]).reshape(2, 1437, -1)
    for epoch in images:
        assert len({row.tobytes() for row in epoch}) == len({r.tobytes() for r in images[0]})
    assert not np.array_equal(images[0], images[1])  # reshuffled


def test_eval_batches_cover_the_split_once_with_padding(digits_source):
    batches = list(data.eval_batches(digits_source, "test", global_batch_size=128, pipeline=""))
    assert len(batches) == 3 and all(b["image"].shape == (128, 8, 8, 1) for b in batches)
    mask = np.concatenate([b["mask"] for b in batches])
    assert mask.sum() == 360 and not mask[360:].any()
    labels = np.concatenate([b["label"] for b in batches])[:360]
    expected = [ex["label"] for ex in digits_source.read("test").as_numpy_iterator()]
    np.testing.assert_array_equal(labels, expected)


def test_augmentations_keep_shape_range_and_are_deterministic():
    plugins.load_repo_folder()  # for `solarize`
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (32, 40, 3)), tf.uint8)
    seed = tf.constant([1, 2], tf.int64)
    for spec, shape in [
        ("resize(16)", (16, 16, 3)),
        ("resize((20, 24))", (20, 24, 3)),
        ("resize_small(16)", (16, 20, 3)),
        ("center_crop(24)", (24, 24, 3)),
        ("pad_crop(4)|flip_lr", (32, 40, 3)),
        ("resize_small(20)|center_crop(20)|flip_lr|solarize(100, p=1.0)", (20, 20, 3)),
    ]:
        ops = augment.parse(spec)
        out = augment.apply(ops, image, seed)
        assert out.shape == shape and out.dtype == tf.uint8, spec
        np.testing.assert_array_equal(out, augment.apply(ops, image, seed))


def test_flip_depends_on_the_seed():
    image = tf.reshape(tf.cast(tf.range(16), tf.uint8), (4, 4, 1))
    ops = augment.parse("flip_lr")
    outputs = {
        augment.apply(ops, image, tf.constant([0, i], tf.int64)).numpy().tobytes()
        for i in range(20)
    }
    assert len(outputs) == 2


def test_bad_pipeline_strings():
    with pytest.raises(UserError, match="unknown augmentation 'flip_rl'; did you mean 'flip_lr'"):
        augment.parse("flip_rl")
    with pytest.raises(UserError, match="cannot parse augmentation"):
        augment.parse("resize(")
    with pytest.raises(UserError, match="arguments must be literals"):
        augment.parse("resize(size)")
    with pytest.raises(UserError, match="resize\\(1, 2, 3, 4\\)"):
        augment.parse("resize(1, 2, 3, 4)")


def test_unknown_split_lists_the_splits(digits_source):
    from recog.experiments import load

    with pytest.raises(UserError, match="has no split 'validation'.*train"):
        data.make_source(load("digits_cnn", ["data.eval_split=validation"]).data)
