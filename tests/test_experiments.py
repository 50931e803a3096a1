import ast
import json

import pytest

from recog import UserError, experiments, plugins


def test_load_with_variant_and_overrides():
    config = experiments.load(
        "digits_cnn:quick",
        [
            "optimizer.lr=0.05",
            "num_steps=7",
            "optimizer.nesterov=false",
            "model.widths=(8, 16, 32)",
            "data.train_pipeline=flip_lr",
            "data.data_dir=/tmp/somewhere",
        ],
    )
    assert config.experiment == "digits_cnn:quick"
    assert config.optimizer.lr == 0.05
    assert config.num_steps == 7
    assert config.optimizer.nesterov is False
    assert tuple(config.model.widths) == (8, 16, 32)
    assert config.data.train_pipeline == "flip_lr"
    assert config.data.data_dir == "/tmp/somewhere"
    assert config.log_every == 10  # from the quick variant


def test_int_field_accepts_only_integers_and_float_takes_int():
    config = experiments.load("digits_cnn", ["optimizer.lr=1"])
    assert config.optimizer.lr == 1.0 and isinstance(config.optimizer.lr, float)
    with pytest.raises(UserError, match="config key 'num_steps' expects an integer, got 'many'"):
        experiments.load("digits_cnn", ["num_steps=many"])


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(UserError) as error:
        experiments.load("digits_cnn", ["optimizer.lrr=0.1"])
    message = str(error.value)
    assert message.startswith("unknown config key 'optimizer.lrr'; did you mean 'optimizer.lr'?")
    assert "Keys under 'optimizer': grad_clip_norm, lr, momentum, name, nesterov," in message


def test_override_without_value():
    with pytest.raises(UserError, match="needs the form key=value"):
        experiments.load("digits_cnn", ["num_steps"])


def test_unknown_experiment_and_variant():
    with pytest.raises(
        UserError, match="unknown experiment 'digit_cnn'; did you mean 'digits_cnn'"
    ):
        experiments.load("digit_cnn")
    with pytest.raises(UserError, match="rejected variant 'huge'"):
        experiments.load("digits_cnn:huge")


def test_experiment_from_a_file_path(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        "import ml_collections\n"
        "def get_config():\n"
        "    return ml_collections.ConfigDict({'num_steps': 3})\n"
    )
    assert experiments.load(str(path)).num_steps == 3


def test_json_round_trip():
    config = experiments.load("digits_cnn")
    again = experiments.from_json(experiments.to_json(config))
    assert again.to_dict() == experiments.from_json(experiments.to_json(again)).to_dict()
    assert again.optimizer.lr == config.optimizer.lr
    assert list(again.model.widths) == list(config.model.widths)


def test_unknown_group_lists_all_keys():
    with pytest.raises(
        UserError, match="unknown config key 'optimiser.lr'; did you mean 'optimizer.lr'"
    ):
        experiments.load("digits_cnn", ["optimiser.lr=0.1"])


def test_every_experiment_loads_and_its_docstring_shows_its_command():
    folder = plugins.package_folder(experiments.EXPERIMENTS_PACKAGE)
    names = experiments.available()
    assert {"cats_resnet", "cifar10_resnet", "digits_cnn", "imagenet_resnet"} <= set(names)
    for name in names:
        experiments.load(name)
        docstring = ast.get_docstring(ast.parse((folder / f"{name}.py").read_text()))
        assert f"python -m recog.main --experiment={name}" in docstring, name


def test_every_optional_key_is_settable_with_its_default_in_one_place():
    config = experiments.load(
        "digits_cnn",
        ["optimizer.grad_clip_norm=1.0", "data.shuffle_bytes=1000", "epochs=2.5"],
    )
    assert config.optimizer.grad_clip_norm == 1.0 and config.data.shuffle_bytes == 1000
    assert config.epochs == 2.5
    from recog.data import pipeline

    assert experiments.COMMON_DEFAULTS["data.shuffle_bytes"] == pipeline.SHUFFLE_BYTES
    # A work directory's config.json from before a key existed reads with its default.
    old = experiments.from_json(json.dumps({"num_steps": 5, "optimizer": {"lr": 0.1}}))
    assert old.optimizer.grad_clip_norm == 0.0 and old.schedule.name == "cosine"
    assert not old.eval_flip and old.init_from == ""


def test_epochs_resolve_against_the_training_images_and_set_steps_win():
    config = experiments.load("digits_cnn", ["num_steps=0", "epochs=3", "eval_every=0"])
    with config.unlocked():
        config.eval_every_epochs = 1.5
    line = experiments.resolve_epochs(config, 500)
    assert (config.num_steps, config.eval_every) == (3 * 500 // 128, int(1.5 * 500 / 128))
    assert config.checkpoint_every == 200  # digits_cnn sets its own
    assert "500 training images at batch 128: config.epochs=3 -> config.num_steps=11" in line
    kept = experiments.load("digits_cnn", ["epochs=3"])
    assert "config.epochs=3 unused, config.num_steps is set" in experiments.resolve_epochs(
        kept, 500
    )
    assert kept.num_steps == 600
    with pytest.raises(
        UserError, match="config.num_steps is 0: set config.num_steps or config.epochs"
    ):
        experiments.resolve_epochs(experiments.load("digits_cnn", ["num_steps=0"]), 500)
