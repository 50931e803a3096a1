"""The `cats_vs_dogs` dataset through TFDS's own builder, offline: mocked data and the message
that says how to proceed when it is neither prepared nor downloadable."""

import time
import types
import urllib.error
import urllib.request

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from recog import UserError, data
from recog.data import cats
from recog.registry import DATASETS


def cats_config(**data_keys):
    return ml_collections.ConfigDict(
        dict(
            name="cats_vs_dogs",
            train_split="train",
            eval_split="validation",
            **data_keys,
        )
    )


def test_tfds_cats_vs_dogs_yields_its_real_feature_spec(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        source = DATASETS.get("cats_vs_dogs")(data_dir=str(tmp_path))
        examples = list(source.read("train").as_numpy_iterator())  # the alias of train[:80%]
    assert source.builder.name == "cats_vs_dogs"
    assert source.resolve_split("validation") == cats.VALIDATION_SPLIT == "train[80%:90%]"
    assert source.class_names == ["cat", "dog"]
    assert data.image_channels(source) == 3
    assert len(examples) == 6
    for ex in examples:
        assert set(ex) == {"image", "label"}
        assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3
        assert ex["image"].shape[-1] == 3 and ex["label"] in (0, 1)


def test_the_fixed_slices_partition_the_train_split():
    sizes = {"train": types.SimpleNamespace(num_examples=23_262)}
    bounds = [
        tfds.core.ReadInstruction.from_spec(split).to_absolute(sizes)[0]
        for split in (cats.TRAIN_SPLIT, cats.VALIDATION_SPLIT, cats.TEST_SPLIT)
    ]
    assert [(b.from_, b.to) for b in bounds] == [(None, 18_610), (18_610, 20_936), (20_936, None)]


def test_offline_without_prepared_data_is_one_user_error(tmp_path, offline):
    started = time.monotonic()
    with pytest.raises(UserError) as error:
        data.make_source(cats_config(data_dir=str(tmp_path)))
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert f"not prepared in the TFDS data directory {tmp_path}" in message
    assert "no network in this test" in message
    assert "--config.data.data_dir=" in message and "--config.data.dir=PATH" in message
    assert f"kagglecatsanddogs_5340.zip into {tmp_path}/downloads/manual/" in message


def test_a_manually_downloaded_archive_goes_to_tfds_without_a_probe(tmp_path, monkeypatch):
    def unreachable(url, timeout):
        raise AssertionError("probed the network")

    prepared = []
    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.setattr(
        tfds.core.DatasetBuilder, "download_and_prepare", lambda self: prepared.append(self.name)
    )
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "kagglecatsanddogs_5340.zip").write_bytes(b"")
    DATASETS.get("cats_vs_dogs")(data_dir=str(tmp_path)).prepare()
    assert prepared == ["cats_vs_dogs"]


def test_dir_switches_to_the_image_folder(tmp_path, offline):
    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        (tmp_path / "photos" / label / "0.jpg").write_bytes(b"")
    source = DATASETS.get("cats_vs_dogs")(dir=str(tmp_path / "photos"), data_dir=str(tmp_path))
    assert source.builder.name == "recog_image_folder"
    assert source.class_names == ["cat", "dog"]
