import ast

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
    assert "Keys under 'optimizer': lr, momentum, name, nesterov, weight_decay." in message


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
