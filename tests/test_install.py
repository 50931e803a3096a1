"""A non-editable install (`pip install .`) carries the built-in experiments and the first-party
plugins: recog is built as a wheel, installed into a fresh virtual environment that sees this
environment's dependencies but not its editable recog, and run as `recog-train` from another
directory."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from recog import UserError, plugins

# What the wheel is built from: everything pyproject.toml names, copied so that the build writes
# nothing (build/, recog.egg-info/) into the checkout.
SOURCES = ("pyproject.toml", "README.md", "recog", "experiments", "plugins")
NO_CACHES = shutil.ignore_patterns("__pycache__")
INSTALLED_AS = {"recog": "recog", "experiments": "recog_experiments", "plugins": "recog_plugins"}


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=NO_CACHES)
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    offline = ["--no-deps", "--no-index", "--no-build-isolation", "-q"]  # setuptools: [test] extra
    run(*pip, "wheel", *offline, "--wheel-dir", str(tmp_path / "dist"), str(source))
    (built,) = (tmp_path / "dist").glob("recog-*.whl")
    return built


def make_venv(tmp_path: Path, wheel: Path) -> tuple[Path, dict[str, str]]:
    """A virtual environment holding the wheel's recog, whose other packages come from this
    environment's site-packages through a .pth line (which runs none of that folder's .pth
    files, so the editable install's import finder stays out). Returns its python and paths."""
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    query = "import json, sysconfig; print(json.dumps(sysconfig.get_paths()))"
    paths = json.loads(run(str(python), "-c", query).stdout)
    ours = dict.fromkeys(sysconfig.get_path(key) for key in ("purelib", "platlib"))
    Path(paths["purelib"], "recog_test_dependencies.pth").write_text("\n".join(ours) + "\n")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python)]
    run(*pip, "install", "--no-deps", "--no-index", "-q", str(wheel))
    return python, paths


def test_editable_install_reads_the_checkouts_folders():
    """Under `pip install -e .` (as here) an edit to experiments/ or plugins/ takes effect."""
    for folder, package in (("experiments", "recog_experiments"), ("plugins", "recog_plugins")):
        assert plugins.package_folder(package).resolve() == REPO / folder
    with pytest.raises(UserError, match="'recog_nothing' is not installed"):
        plugins.package_folder("recog_nothing")


def test_wheel_holds_every_module_under_its_installed_name(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{INSTALLED_AS[folder]}/{path.relative_to(REPO / folder).as_posix()}"
        for folder in INSTALLED_AS
        for path in (REPO / folder).rglob("*.py")
    }
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel (list their packages in pyproject.toml): {missing}"
    top_level = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top_level == set(INSTALLED_AS.values())


def test_installed_copy_lists_and_trains_from_another_directory(wheel, tmp_path):
    python, paths = make_venv(tmp_path, wheel)
    site = Path(paths["purelib"]).resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    # The installed recog is the one imported, and the console script runs that interpreter.
    found = run(str(python), "-c", "import recog; print(recog.__file__)", cwd=elsewhere, env=env)
    assert Path(found.stdout.strip()).resolve().is_relative_to(site)
    train = Path(paths["scripts"]) / "recog-train"
    assert str(python) in "".join(train.read_text().splitlines()[:2])  # pip's shebang

    # `--list` and a 2-step training run of a built-in experiment, side by side to save time.
    with open(tmp_path / "list.out", "w+") as out, open(tmp_path / "list.err", "w+") as err:
        listing = subprocess.Popen(
            [train, "--list"], cwd=elsewhere, env=env, stdout=out, stderr=err, text=True
        )
        args = ["--experiment=digits_cnn:quick", "--config.num_steps=2", "--workdir=run"]
        run(str(train), *args, cwd=elsewhere, env=env)
        assert listing.wait(timeout=300) == 0, Path(err.name).read_text()[-3000:]
        printed = Path(out.name).read_text()

    for name in ("digits_cnn", "cats_resnet", "convnext_tiny", "solarize"):
        assert f"\n  {name} " in printed, name
    assert f"plugin {site / 'recog_plugins' / 'convnext.py'} (from the plugins folder" in printed
    assert json.loads((elsewhere / "run" / "config.json").read_text())["num_steps"] == 2
