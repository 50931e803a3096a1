import json
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
from conftest import read_jsonl, run_binary

from recog import AUGMENTATIONS, DATASETS, MODELS, plugins

MODEL_PLUGIN = """
from flax import nnx
from recog import MODELS

@MODELS.register("{name}")
def build(num_classes, *, in_channels, rngs):
    \"\"\"A linear classifier on flattened pixels.\"\"\"
    flatten = lambda x: x.reshape(x.shape[0], -1)
    return nnx.Sequential(flatten, nnx.Linear(64 * in_channels, num_classes, rngs=rngs))
"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def make_distribution(site, package, entry_value, body):
    """An installed distribution with a `recog.plugins` entry point, as pip would leave it."""
    write(site / package / "__init__.py", body)
    info = site / f"{package}-0.1.dist-info"
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    write(info / "entry_points.txt", f"[recog.plugins]\nmine = {entry_value}\n")


def test_repo_plugins_folder_is_loaded():
    plugins.load_repo_folder()
    assert "solarize" in AUGMENTATIONS and "shapes" in DATASETS


def test_shapes_dataset_plugin_prepares_a_balanced_deterministic_set(tmp_path):
    plugins.load_repo_folder()
    source = DATASETS.get("shapes")(data_dir=str(tmp_path))
    source.prepare()
    test = list(source.read("test").as_numpy_iterator())
    assert source.class_names == ["circle", "square", "triangle"]
    assert source.num_examples("train") == 3_000 and len(test) == 600
    assert Counter(int(ex["label"]) for ex in test) == {0: 200, 1: 200, 2: 200}
    assert all(ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8 for ex in test)
    assert len({ex["image"].tobytes() for ex in test}) == 600
    shapes = sys.modules[DATASETS.get("shapes").__module__]
    first, again = (shapes.draw(2, np.random.default_rng([0, 5])) for _ in range(2))
    np.testing.assert_array_equal(first, again)


def test_shapes_dataset_plugin_trains_through_the_binary(tmp_path):
    workdir = tmp_path / "run"
    result = run_binary(
        "main",
        "--experiment=digits_cnn",
        "--config.data.name=shapes",
        "--config.data.mean=(0.5, 0.5, 0.5)",
        "--config.data.std=(0.25, 0.25, 0.25)",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
        "--config.num_steps=4",
        "--config.log_every=2",
        "--config.eval_every=4",
        "--config.checkpoint_every=4",
        f"--workdir={workdir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = json.loads((workdir / "dataset.json").read_text())
    assert dataset == {"class_names": ["circle", "square", "triangle"], "image_shape": [32, 32, 3]}
    final = [m for m in read_jsonl(workdir / "metrics.jsonl") if "eval/accuracy" in m][-1]
    assert final["step"] == 4 and final["eval/num_examples"] == 600


def test_folder_loads_modules_and_packages(tmp_path):
    write(tmp_path / "folder_model.py", MODEL_PLUGIN.format(name="folder_model"))
    write(tmp_path / "folder_pkg" / "__init__.py", MODEL_PLUGIN.format(name="folder_pkg_model"))
    write(tmp_path / "_private.py", "raise RuntimeError('not a plugin')")
    plugins.load_repo_folder(tmp_path)
    assert {"folder_model", "folder_pkg_model"} <= set(MODELS.names())


def test_plugins_flag_takes_paths_and_modules(tmp_path, monkeypatch):
    path = write(tmp_path / "by_path.py", MODEL_PLUGIN.format(name="by_path_model"))
    write(tmp_path / "mods" / "by_module.py", MODEL_PLUGIN.format(name="by_module_model"))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    plugins.load_all([str(path), "by_module"])
    assert {"by_path_model", "by_module_model"} <= set(MODELS.names())
    assert plugins.loaded()[str(path.resolve())] == "--plugins"


def test_entry_point_of_an_installed_distribution(tmp_path, monkeypatch):
    make_distribution(tmp_path, "ep_pkg", "ep_pkg", MODEL_PLUGIN.format(name="entry_point_model"))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.load_entry_points()
    assert "entry_point_model" in MODELS


def test_entry_point_naming_a_callable_is_called(tmp_path, monkeypatch):
    body = MODEL_PLUGIN.format(name="unused").replace(
        "@MODELS.register", "def register():\n    MODELS.register('called_model')(build)\n#"
    )
    make_distribution(tmp_path, "ep_callable", "ep_callable:register", body)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.load_entry_points()
    assert "called_model" in MODELS


def test_plugin_paths_are_made_absolute_and_modules_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = plugins.absolute_paths(["mine.py", "sub/mine.py", "some.module"])
    assert absolute == [str(tmp_path.resolve() / p) for p in ("mine.py", "sub/mine.py")] + [
        "some.module"
    ]


def test_a_module_both_installed_and_named_by_path_loads_once(tmp_path, monkeypatch):
    """As step 3's run of the README's walkthrough evaluates once the module is installed too."""
    body = MODEL_PLUGIN.format(name="twin_model")
    path = write(tmp_path / "twin_model.py", body)
    make_distribution(tmp_path / "site", "twin_pkg", "twin_pkg.twin_model", "")
    write(tmp_path / "site" / "twin_pkg" / "twin_model.py", body)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    plugins.load_all([str(path)])
    assert "twin_model" in MODELS
    source = plugins.loaded()["entry-point:twin_pkg.twin_model"]
    assert source.endswith(f"the same file as {path.resolve()}, loaded once")


def test_two_different_modules_registering_one_name_point_at_the_second(tmp_path, monkeypatch):
    path = write(tmp_path / "rival.py", MODEL_PLUGIN.format(name="rival_model"))
    make_distribution(tmp_path / "site", "rival_pkg", "rival_pkg.rival", "")
    edited = MODEL_PLUGIN.format(name="rival_model").replace("linear", "plain linear")
    rival = write(tmp_path / "site" / "rival_pkg" / "rival.py", edited)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(plugins.PluginError) as error:
        plugins.load_all([str(path)])
    message = str(error.value)
    assert "UserError: model 'rival_model' is already registered by" in message
    assert f"(at {rival}:" in message


def test_failing_plugin_names_itself_and_the_error(tmp_path):
    path = write(tmp_path / "broken.py", "import numpy\nimport not_a_real_module_xyz\n")
    with pytest.raises(plugins.PluginError) as error:
        plugins.load_all([str(path)])
    message = str(error.value)
    assert "broken.py" in message and "--plugins" in message
    assert "ModuleNotFoundError: No module named 'not_a_real_module_xyz'" in message


def test_missing_plugin_file_and_module(tmp_path):
    with pytest.raises(plugins.PluginError, match="does not exist"):
        plugins.load_all([str(tmp_path / "nope.py")])
    with pytest.raises(plugins.PluginError, match="no_such_plugin_module"):
        plugins.load_all(["no_such_plugin_module"])


def test_list_shows_plugins_from_all_three_sources(tmp_path):
    path = write(tmp_path / "cli_model.py", MODEL_PLUGIN.format(name="cli_path_model"))
    site = tmp_path / "site"
    make_distribution(site, "cli_ep_pkg", "cli_ep_pkg", MODEL_PLUGIN.format(name="cli_ep_model"))
    import os

    env = {**os.environ, "PYTHONPATH": str(site)}
    result = run_binary("main", "--list", f"--plugins={path}", env=env)
    assert result.returncode == 0, result.stderr
    for expected in (
        "cli_path_model",
        "cli_ep_model",
        "solarize",
        "small_cnn",
        "digits",
        "digits_cnn",
        "shapes",
        "tfds:NAME",
        "imagenet_resnet",
        "cifar10_resnet",
    ):
        assert expected in result.stdout
    assert "A linear classifier on flattened pixels." in result.stdout


def test_broken_plugin_is_one_line_error_not_traceback(tmp_path):
    path = write(tmp_path / "broken_cli.py", "raise ValueError('bad plugin config')\n")
    result = run_binary("main", "--list", f"--plugins={path}")
    assert result.returncode == 2
    assert "error: plugin" in result.stderr and "ValueError: bad plugin config" in result.stderr
    assert "Traceback" not in result.stderr
