import textwrap

import pytest
from conftest import run_binary

from recog import AUGMENTATIONS, MODELS, plugins

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
    assert "solarize" in AUGMENTATIONS


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
    ):
        assert expected in result.stdout
    assert "A linear classifier on flattened pixels." in result.stdout


def test_broken_plugin_is_one_line_error_not_traceback(tmp_path):
    path = write(tmp_path / "broken_cli.py", "raise ValueError('bad plugin config')\n")
    result = run_binary("main", "--list", f"--plugins={path}")
    assert result.returncode == 2
    assert "error: plugin" in result.stderr and "ValueError: bad plugin config" in result.stderr
    assert "Traceback" not in result.stderr
