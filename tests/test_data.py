import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from recog import UserError, augment, data, plugins
from recog.augment import pipeline as pipeline_module
from recog.data import folder
from recog.data.pipeline import shuffle_buffer_size


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


def write_photos(folder_path, count_per_class=40, size=(48, 40)):
    """Smooth, distinct JPEG photos in cat/ and dog/ (a hash split makes train/validation/test)."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0 : size[1], 0 : size[0]]
    for label in ("cat", "dog"):
        (folder_path / label).mkdir(parents=True)
        for i in range(count_per_class):
            a, b, c = rng.uniform(0, 4, 3)
            pixels = np.stack([a * rows, b * cols, c * (rows + cols)], -1) % 256
            Image.fromarray(pixels.astype(np.uint8)).save(folder_path / label / f"{i}.jpg")


@pytest.fixture(scope="module")
def photos_source(tmp_path_factory):
    """A prepared image folder: its TFDS data holds the photos as JPEG bytes."""
    folder_path = tmp_path_factory.mktemp("photos") / "pets"
    write_photos(folder_path)
    source = folder.image_folder(str(folder_path))
    source.prepare()
    return source


def test_uncached_stream_decodes_after_the_shuffle_and_resumes_exactly(photos_source):
    kwargs = dict(global_batch_size=16, pipeline="inception_crop(24)|flip_lr", seed=5, cache=False)
    num_examples = photos_source.num_examples("train")
    uninterrupted = take(data.train_batches(photos_source, "train", **kwargs), 12)
    again = take(data.train_batches(photos_source, "train", **kwargs), 12)
    start = 2 * num_examples // 16 + 1  # in the middle of the third epoch
    resumed = take(data.train_batches(photos_source, "train", start_step=start, **kwargs), 3)
    assert uninterrupted[0]["image"].shape == (16, 24, 24, 3)
    for a, b in zip(uninterrupted, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    for a, b in zip(uninterrupted[start:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_a_resume_decodes_only_what_it_serves(digits_source, monkeypatch):
    decoded = []
    real_decode = pipeline_module.decode

    def counting_decode(encoded, channels):
        count = tf.py_function(lambda: decoded.append(1) or 0, [], tf.int32)
        with tf.control_dependencies([count]):
            return real_decode(tf.identity(encoded), channels)

    monkeypatch.setattr(pipeline_module, "decode", counting_decode)
    skipped = 20 * 64  # almost a whole epoch of 1,437
    stream = data.train_batches(
        digits_source,
        "train",
        global_batch_size=64,
        pipeline="pad_crop(1)",
        seed=0,
        start_step=20,
        cache=False,
    )
    next(stream)
    assert 64 <= len(decoded) < skipped  # what it served, and what tf.data prefetched


def test_the_shuffle_buffer_is_sized_in_bytes_and_each_epoch_stays_whole(digits_source):
    mean_bytes = digits_source.mean_example_bytes("train")
    assert 50 < mean_bytes < 500  # 8x8 PNGs, stored, not 64-byte decoded pixels in memory
    assert shuffle_buffer_size(digits_source, "train", 201 * mean_bytes) == 100
    assert shuffle_buffer_size(digits_source, "train", 1) == 1
    assert shuffle_buffer_size(digits_source, "train", 10**12) == 1437
    batches = take(
        data.train_batches(
            digits_source,
            "train",
            global_batch_size=479,
            pipeline="",
            seed=0,
            cache=False,
            shuffle_bytes=40 * mean_bytes,
        ),
        6,
    )
    images = np.concatenate([b["image"] for b in batches]).reshape(2, 1437, -1)
    cached = np.concatenate(
        [ex["image"].reshape(1, -1) for ex in digits_source.read("train").as_numpy_iterator()]
    )
    expected = sorted(row.tobytes() for row in cached)
    for epoch in images:
        assert sorted(row.tobytes() for row in epoch) == expected
    assert not np.array_equal(images[0], images[1])


def test_decoding_only_the_crop_matches_decoding_everything(photos_source):
    crop = augment.parse("inception_crop(24, area_min=0.3)")[0]
    examples = photos_source.read("train", decode=False).take(8)
    for i, example in enumerate(examples):
        seed = tf.constant([7, i], tf.int64)
        fused = crop.decode_and_apply(example["image"], 3, seed)
        whole = crop(tf.io.decode_jpeg(example["image"], channels=3), seed)
        difference = np.abs(fused.numpy() - whole.numpy())
        assert difference.max() <= 8 and difference.mean() < 1.0  # colour upsampling at the edges
    png = tf.io.encode_png(tf.constant(np.arange(48 * 40 * 3, dtype=np.uint8).reshape(48, 40, 3)))
    seed = tf.constant([1, 1], tf.int64)
    np.testing.assert_array_equal(
        crop.decode_and_apply(png, 3, seed), crop(tf.io.decode_png(png, channels=3), seed)
    )
