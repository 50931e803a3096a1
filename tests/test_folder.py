"""The image-folder dataset: robust decoding, labels from folder names, splits, re-preparation."""

import io
import logging

import ml_collections
import numpy as np
import pytest
from PIL import Image

from recog import UserError, data
from recog.data import decode, folder

CAT_RED = (200, 30, 30)
DOG_BLUE = (30, 30, 200)
SIZE = (32, 24)  # width, height


def save_photo(path, colour, size=SIZE, **save_kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, **save_kwargs)


def noise_jpeg_bytes():
    pixels = np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_readable_kinds(folder_path):
    """Files that must be decoded, each to an RGB image; returns {file name: expected pixel}."""
    folder_path.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", SIZE, CAT_RED).convert("CMYK").save(folder_path / "cmyk.jpg")
    Image.new("L", SIZE, 90).save(folder_path / "grey.jpg")
    rgba = Image.new("RGBA", SIZE, (*CAT_RED, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 4, 4))  # a transparent corner
    rgba.save(folder_path / "alpha.png")
    Image.fromarray(np.full(SIZE[::-1], 257 * 100, np.uint16)).save(folder_path / "deep.png")
    first, second = (Image.new("RGB", SIZE, c).quantize(4) for c in (CAT_RED, DOG_BLUE))
    first.save(folder_path / "animated.gif", save_all=True, append_images=[second])
    return {
        "cmyk.jpg": CAT_RED,
        "grey.jpg": (90, 90, 90),
        "alpha.png": CAT_RED,  # and white in the transparent corner
        "deep.png": (100, 100, 100),  # 16-bit grey 25,700 scaled to 8 bits
        "animated.gif": CAT_RED,  # the first frame
    }


def write_unreadable_kinds(folder_path):
    """Files that must be skipped (max_pixels=2000 makes the large one too large)."""
    folder_path.mkdir(parents=True, exist_ok=True)
    jpeg = noise_jpeg_bytes()
    (folder_path / "corrupt.jpg").write_bytes(jpeg[:2] + bytes(40) + jpeg[42:])
    (folder_path / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder_path / "empty.jpg").write_bytes(b"")
    (folder_path / "text.jpg").write_text("not an image")
    save_photo(folder_path / "large.jpg", CAT_RED, size=(100, 50))
    return {"corrupt.jpg", "truncated.jpg", "empty.jpg", "text.jpg", "large.jpg"}


def assert_colour(pixel, colour):
    np.testing.assert_allclose(np.asarray(pixel, int), colour, atol=4)


def pixel(jpeg_bytes, x=-1, y=-1):
    return Image.open(io.BytesIO(jpeg_bytes)).getpixel((x % SIZE[0], y % SIZE[1]))


def examples(source, split):
    return {
        ex["image/filename"].decode(): ex
        for ex in source.builder.as_dataset(split=split).as_numpy_iterator()
    }


def test_decoding_converts_every_readable_kind_to_rgb(tmp_path):
    for name, expected in write_readable_kinds(tmp_path).items():
        jpeg = decode.read_as_jpeg(tmp_path / name)
        assert Image.open(io.BytesIO(jpeg)).mode == "RGB", name
        assert_colour(pixel(jpeg), expected)
    corner = pixel(decode.read_as_jpeg(tmp_path / "alpha.png"), 0, 0)
    assert_colour(corner, (255, 255, 255))  # composited onto white


def test_decoding_turns_photos_upright(tmp_path):
    photo = Image.new("RGB", SIZE, CAT_RED)
    exif = photo.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees to view
    photo.save(tmp_path / "sideways.jpg", exif=exif)
    jpeg = decode.read_as_jpeg(tmp_path / "sideways.jpg")
    assert Image.open(io.BytesIO(jpeg)).size == SIZE[::-1]


def test_decoding_refuses_every_unreadable_kind(tmp_path):
    for name in write_unreadable_kinds(tmp_path):
        with pytest.raises(decode.UnreadableImage):
            decode.read_as_jpeg(tmp_path / name, max_pixels=2000)
    with pytest.raises(decode.UnreadableImage, match="empty file"):
        decode.read_as_jpeg(tmp_path / "empty.jpg")
    with pytest.raises(decode.UnreadableImage, match="100x50 is more than max_pixels=2,000"):
        decode.read_as_jpeg(tmp_path / "large.jpg", max_pixels=2000)


def test_max_side_downscales_keeping_the_aspect_ratio(tmp_path):
    save_photo(tmp_path / "wide.jpg", CAT_RED, size=(300, 100))
    jpeg = decode.read_as_jpeg(tmp_path / "wide.jpg", max_side=60)
    assert Image.open(io.BytesIO(jpeg)).size == (60, 20)


def test_split_folders_with_bad_files(tmp_path, caplog):
    root = tmp_path / "pets"
    for i in range(3):
        save_photo(root / "train" / "cat" / f"{i}.jpg", CAT_RED)
        save_photo(root / "train" / "dog" / "nested" / f"{i}.jpg", DOG_BLUE)
    save_photo(root / "validation" / "dog" / "v.jpg", DOG_BLUE)
    readable = write_readable_kinds(root / "train" / "cat")
    unreadable = write_unreadable_kinds(root / "train" / "cat")
    (root / "train" / "cat" / "Thumbs.db").write_bytes(b"\0")
    save_photo(root / "train" / "cat" / ".hidden.jpg", DOG_BLUE)

    config = ml_collections.ConfigDict(
        dict(
            name="image_folder",
            dir=str(root),
            data_dir=str(tmp_path / "tfds"),
            max_pixels=2000,
            train_split="train",
            eval_split="validation",
        )
    )
    with caplog.at_level(logging.WARNING):
        source = data.make_source(config)

    assert source.class_names == ["cat", "dog"]
    assert data.image_channels(source) == 3
    assert source.num_examples("validation") == 1
    train = examples(source, "train")
    expected = {f"train/cat/{i}.jpg" for i in range(3)} | {
        f"train/dog/nested/{i}.jpg" for i in range(3)
    }
    expected |= {f"train/cat/{name}" for name in readable}
    assert set(train) == expected
    for path, ex in train.items():
        assert ex["image"].dtype == np.uint8 and ex["image"].shape == (SIZE[1], SIZE[0], 3)
        assert source.class_names[ex["label"]] == path.split("/")[1]
    assert_colour(train["train/dog/nested/0.jpg"]["image"][5, 5], DOG_BLUE)

    skip_reports = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skip_reports) == 1
    total = len(expected) + 1 + len(unreadable)
    assert (
        f"{len(unreadable)} of the {total} image files of {root} cannot be read"
        in (skip_reports[0])
    )
    assert "train/cat/" in skip_reports[0]


def test_class_folders_get_a_hash_split(tmp_path):
    root = tmp_path / "PetImages"
    for i in range(40):
        save_photo(root / "Cat" / f"{i}.jpg", CAT_RED)
        save_photo(root / "Dog" / f"{i}.jpg", DOG_BLUE)
    (root / "readme.txt").write_text("files outside class folders are ignored")

    source = folder.image_folder(str(root), data_dir=str(tmp_path / "tfds"))
    source.prepare()

    assert source.class_names == ["Cat", "Dog"]
    seen = {}
    for split in ("train", "validation", "test"):
        for path, ex in examples(source, split).items():
            assert folder.hash_split(path) == split
            assert source.class_names[ex["label"]] == path.split("/")[0]
            colour = CAT_RED if path.startswith("Cat") else DOG_BLUE
            assert_colour(ex["image"][0, 0], colour)
            seen[path] = split
    assert len(seen) == 80
    assert 50 <= list(seen.values()).count("train") <= 75  # about 80%


def test_reused_while_unchanged_and_prepared_again_after_changes(tmp_path):
    root, data_dir = tmp_path / "photos", str(tmp_path / "tfds")
    for i in range(4):
        save_photo(root / "train" / "a" / f"{i}.jpg", CAT_RED)
        save_photo(root / "train" / "b" / f"{i}.jpg", DOG_BLUE)
        save_photo(root / "test" / "a" / f"{i}.jpg", CAT_RED)

    first = folder.image_folder(str(root), data_dir)
    first.prepare()
    again = folder.image_folder(str(root), data_dir)
    assert again.builder.data_dir == first.builder.data_dir and again.builder.is_prepared()

    save_photo(root / "train" / "b" / "new.jpg", DOG_BLUE)
    added = folder.image_folder(str(root), data_dir)
    assert added.builder.data_dir != first.builder.data_dir and not added.builder.is_prepared()
    added.prepare()
    assert added.num_examples("train") == 9 and added.num_examples("test") == 4
    assert not first.builder.is_prepared()  # the outdated copy is gone

    (root / "test" / "a" / "0.jpg").unlink()
    removed = folder.image_folder(str(root), data_dir)
    removed.prepare()
    assert removed.num_examples("test") == 3
    prepared = [p.name for p in (tmp_path / "tfds" / "recog_image_folder").iterdir()]
    assert prepared == [removed.builder.builder_config.name]

    other_options = folder.image_folder(str(root), data_dir, max_side=16)
    assert not other_options.builder.is_prepared()


def test_folder_mistakes_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="needs a folder: --config.data.dir=PATH"):
        folder.image_folder()
    with pytest.raises(UserError, match="does not exist"):
        folder.image_folder(str(tmp_path / "missing"))
    save_photo(tmp_path / "one" / "only" / "0.jpg", CAT_RED)
    with pytest.raises(UserError, match="at least two"):
        folder.image_folder(str(tmp_path / "one"))
    save_photo(tmp_path / "split" / "train" / "a" / "0.jpg", CAT_RED)
    save_photo(tmp_path / "split" / "train" / "b" / "0.jpg", CAT_RED)
    save_photo(tmp_path / "split" / "validation" / "c" / "0.jpg", CAT_RED)
    with pytest.raises(UserError, match="validation/c have no counterpart"):
        folder.image_folder(str(tmp_path / "split"))


def test_a_split_without_any_readable_image_is_a_user_error(tmp_path):
    root = tmp_path / "bad"
    save_photo(root / "train" / "a" / "0.jpg", CAT_RED)
    save_photo(root / "train" / "b" / "0.jpg", DOG_BLUE)
    (root / "validation" / "a").mkdir(parents=True)
    (root / "validation" / "a" / "0.jpg").write_text("not an image")
    source = folder.image_folder(str(root), data_dir=str(tmp_path / "tfds"))
    with pytest.raises(UserError, match="none of the 1 image files of split 'validation'"):
        source.prepare()
    assert not source.builder.is_prepared()
