"""`tfds:NAME`: TFDS's own builders by name, offline (mocked data), and the errors that say what to
do when a name, a feature or the data is not there."""

import time
import types

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tfds_mocking import mocked_tfds

from recog import UserError, data
from recog.data import catalog


def data_config(name, **keys):
    return ml_collections.ConfigDict(
        {"train_split": "train", "eval_split": "test", **keys, "name": name}
    )


def test_oxford_pets_by_name_with_mocked_data(tmp_path):
    """Two image and two ClassLabel features: the builder's supervised_keys pick the pair."""
    with mocked_tfds("oxford_iiit_pet", tmp_path, ["train", "test"], examples=12):
        source = data.make_source(data_config("tfds:oxford_iiit_pet"))
        species = data.make_source(data_config("tfds:oxford_iiit_pet", label_key="species"))
        batch = next(
            data.train_batches(
                source, "train[:50%]", global_batch_size=4, pipeline="resize(24)", seed=0
            )
        )
    assert source.builder.name == "oxford_iiit_pet"
    assert (source.image_key, source.label_key) == ("image", "label")
    assert len(source.class_names) == 37 and source.class_names[0] == "Abyssinian"
    assert data.describe(source)["image_shape"] == [None, None, 3]
    assert data.image_channels(source) == 3
    assert source.num_examples("train[:50%]") == 6
    assert batch["image"].shape == (4, 24, 24, 3) and batch["image"].dtype == np.uint8
    assert set(batch["label"]) <= set(range(37))
    assert species.label_key == "species" and species.class_names == ["Cat", "Dog"]


def test_any_experiment_takes_a_tfds_name(tmp_path):
    """cats_resnet's config has data.dir (a placeholder, None): keys left at None are not passed."""
    from recog.experiments import load

    config = load("cats_resnet", ["data.name=tfds:mnist", "data.eval_split=test"])
    with mocked_tfds("mnist", tmp_path, ["train", "test"], examples=4):
        source = data.make_source(config.data)
    assert source.builder.name == "mnist" and source.num_classes == 10


def test_unknown_split_lists_the_builders_splits(tmp_path):
    mnist = mocked_tfds("mnist", tmp_path, ["train", "test"], examples=4)
    with mnist, pytest.raises(UserError, match="no split 'validation'.*its splits: train, test"):
        data.make_source(data_config("tfds:mnist", eval_split="validation"))


def test_unknown_name_suggests_close_matches_from_tfds_catalogue():
    with pytest.raises(UserError) as error:
        data.make_source(data_config("tfds:oxford_iiit_pett"))
    message = str(error.value)
    assert message.startswith(
        "TFDS has no data set 'oxford_iiit_pett'; did you mean 'tfds:oxford_iiit_pet'?"
    )
    assert catalog.CATALOGUE_URL in message


def test_a_bare_tfds_name_points_to_the_prefix_and_typos_list_it():
    with pytest.raises(UserError, match="TFDS's catalogue has it: --config.data.name=tfds:mnist"):
        data.make_source(data_config("mnist"))
    with pytest.raises(UserError) as error:
        data.make_source(data_config("digitz"))
    assert "did you mean 'digits'?" in str(error.value) and "tfds:NAME" in str(error.value)
    with pytest.raises(UserError, match="Close in TFDS's catalogue: tfds:cifar10, tfds:cifar100"):
        data.make_source(data_config("cifar"))


def test_unknown_version_is_tfds_own_message(tmp_path):
    with pytest.raises(UserError, match=r"tfds:mnist:9.9.9: .*only: 3.0.1"):
        data.make_source(data_config("tfds:mnist:9.9.9", data_dir=str(tmp_path)))


def fake_builder(features: dict, supervised_keys=None):
    """What feature detection reads of a builder: its name and its info's features."""
    info = types.SimpleNamespace(
        features=tfds.features.FeaturesDict(features), supervised_keys=supervised_keys
    )
    return types.SimpleNamespace(name="fake", info=info)


TWO_VIEWS = {
    "front": tfds.features.Image(shape=(8, 8, 3)),
    "side": tfds.features.Image(shape=(8, 8, 3)),
    "make": tfds.features.ClassLabel(names=["a", "b"]),
    "colour": tfds.features.ClassLabel(names=["red", "blue", "green"]),
    "id": tfds.features.Text(),
}


def test_feature_detection_without_supervised_keys():
    only = {"picture": tfds.features.Image(shape=(8, 8, 1)), "kind": TWO_VIEWS["make"]}
    assert catalog.feature_keys(fake_builder(only), None, None) == ("picture", "kind")
    assert catalog.feature_keys(fake_builder(TWO_VIEWS), "side", "colour") == ("side", "colour")
    with pytest.raises(UserError) as error:
        catalog.feature_keys(fake_builder(TWO_VIEWS), None, "make")
    assert str(error.value) == (
        "fake has several tfds.features.Image features (front, side) and no supervised_keys that "
        "say which is the image; pick one with config.data.image_key "
        "(--config.data.image_key=front, or in the experiment file where its config.data lacks "
        "the key)."
    )
    with pytest.raises(UserError, match="several tfds.features.ClassLabel features"):
        catalog.feature_keys(fake_builder(TWO_VIEWS), "front", None)


def test_feature_detection_errors_name_the_features():
    with pytest.raises(UserError) as error:
        catalog.feature_keys(fake_builder(TWO_VIEWS), "id", "make")
    assert str(error.value) == (
        "config.data.image_key='id' is not a tfds.features.Image feature of fake; its features: "
        "front (Image), side (Image), make (ClassLabel), colour (ClassLabel), id (Text)."
    )
    no_label = {"image": TWO_VIEWS["front"], "caption": tfds.features.Text()}
    with pytest.raises(UserError, match="fake has no tfds.features.ClassLabel feature for the la"):
        catalog.feature_keys(fake_builder(no_label), None, None)


def test_supervised_keys_that_are_not_image_and_label_are_passed_over():
    keys = ("id", "colour")  # a text input: not an image, so the only-one rule decides
    only_front = {k: v for k, v in TWO_VIEWS.items() if k != "side"}
    builder = fake_builder(only_front, supervised_keys=keys)
    assert catalog.feature_keys(builder, None, None) == ("front", "colour")


def test_manual_download_data_set_says_where_its_files_go(tmp_path):
    with pytest.raises(UserError) as error:
        data.make_source(data_config("tfds:imagenet2012", data_dir=str(tmp_path)))
    message = str(error.value)
    assert f"put its files into {tmp_path}/downloads/manual/" in message
    assert "ILSVRC2012_img_train.tar" in message and "--config.data.data_dir=" in message


def test_offline_download_fails_fast_with_what_to_do(tmp_path, offline):
    started = time.monotonic()
    with pytest.raises(UserError) as error:
        data.make_source(data_config("tfds:mnist", data_dir=str(tmp_path)))
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert f"mnist is not prepared in the TFDS data directory {tmp_path}" in message
    assert "no network in this test" in message and "--config.data.data_dir=" in message
