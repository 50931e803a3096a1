"""The commands a newcomer types: a Python without recog's packages answered in one line, and
`--list`'s model figures, measured once for the models that ship with recog and afresh for
other plugins' models."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

from recog import MODELS
from recog.models import info


def without_site_packages(*args: str) -> subprocess.CompletedProcess:
    """`python -S ...` from the repository root: recog's own folder is importable, its
    dependencies (installed in site-packages) are not."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-S", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_a_python_without_recogs_packages_says_so_in_one_line():
    result = without_site_packages("-m", "recog.main", "--list")
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: recog is not installed for {sys.executable} (no JAX found): ")
    fix = "`source .venv/bin/activate`" if (REPO / ".venv").is_dir() else "`pip install -e .`"
    assert fix in line


def test_importing_recog_without_its_packages_raises_with_the_same_advice():
    result = without_site_packages("-c", "import recog")
    assert result.returncode == 1
    assert "ModuleNotFoundError: recog is not installed for" in result.stderr


def figures_test_model(num_classes, *, in_channels, rngs):
    """A plugin's model: defined outside recog/models and the plugins folder."""
    from flax import nnx

    return nnx.Sequential(
        lambda x: x.mean(axis=(1, 2)), nnx.Linear(in_channels, num_classes, rngs=rngs)
    )


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECOG_CACHE", str(tmp_path))
    info.cached_figures.cache_clear()
    yield tmp_path / "model_figures.json"
    info.cached_figures.cache_clear()


def test_shipped_models_figures_are_measured_once_and_kept(cache_file):
    assert info.listing_figures("small_cnn") == ("0.42M", "3.76")  # docs/models.md's table
    kept = json.loads(cache_file.read_text())
    assert kept == {"source": info.shipped_source_key(), "figures": kept["figures"]}
    assert kept["figures"] == {
        "small_cnn": [info.param_count("small_cnn"), pytest.approx(3.76, abs=0.005)]
    }

    kept["figures"]["small_cnn"] = [1, 2.0]  # as read back by a later listing
    cache_file.write_text(json.dumps(kept))
    info.cached_figures.cache_clear()
    assert info.listing_figures("small_cnn") == ("0.00M", "2.00")


def test_figures_measured_on_other_source_are_measured_again(cache_file):
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps({"source": "older", "figures": {"small_cnn": [1, 2.0]}}))
    assert info.listing_figures("small_cnn") == ("0.42M", "3.76")


def test_a_plugins_model_is_measured_on_every_listing(cache_file, monkeypatch):
    # Registered for this test alone: tests that go over every model must not meet it.
    monkeypatch.setitem(MODELS._entries, "figures_test_model", figures_test_model)
    assert not info.is_shipped("figures_test_model") and info.is_shipped("small_cnn")
    assert info.listing_figures("figures_test_model") == ("0.00M", "0.00")
    assert not cache_file.exists()


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_listing_leaves_tensorflow_unloaded_and_its_first_use_loads_it_as_recog_sets_it():
    result = run_python(
        "import sys\n"
        "from recog import main\n"
        "main.info.listing_figures = lambda name: ('', '')\n"  # measured afresh on CI: 20 s
        "main.print_listing()\n"
        "assert 'tensorflow.python' not in sys.modules, 'the listing loaded TensorFlow'\n"
        "import tensorflow as tf\n"
        "assert 'tensorflow.python' not in sys.modules, 'the import statement loaded it'\n"
        "print(int(tf.reduce_sum(tf.range(4))), tf.config.get_visible_devices('GPU'))\n"
        "assert 'keras' not in sys.modules\n"
        "import keras\n"  # blocked only while TensorFlow's __init__ ran
    )
    assert result.returncode == 0, result.stderr
    assert "ResNet-18 v1.5 (He et al. 2015): basic blocks (2, 2, 2, 2)." in result.stdout
    assert result.stdout.splitlines()[-1] == "6 []"


def test_a_reader_that_stops_early_ends_the_listing_without_a_traceback():
    reader, writer = os.pipe()
    os.close(reader)  # as `python -m recog.main --list | head -1` leaves it, sooner
    try:
        result = subprocess.run(
            [sys.executable, "-m", "recog.main", "--list"],
            cwd=REPO,
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(writer)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr


def test_the_weights_flag_offers_what_inference_loads():
    from recog import cli, inference

    assert list(cli.WEIGHTS) == list(inference.STATE_KEYS)


def huge_pages_on_request() -> bool:
    """Whether Linux here gives transparent huge pages only on request, and glibc can ask."""
    from pathlib import Path

    from recog import startup

    libc, version = startup.platform.libc_ver()
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return (
        libc == "glibc"
        and startup._version(version) >= (2, 35)
        and thp.exists()
        and "[madvise]" in thp.read_text()
    )


@pytest.mark.skipif(not huge_pages_on_request(), reason="THP not in madvise mode, or no glibc")
def test_a_binary_restarts_itself_with_huge_pages_and_its_arguments(tmp_path):
    seen = tmp_path / "seen.json"
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, sys\n"
        f"open({str(seen)!r}, 'w').write(json.dumps("
        "[os.environ.get('GLIBC_TUNABLES'), sys.orig_argv[1:]]))\n"
        "os._exit(0)\n"
    )
    command = ["-m", "recog.main", f"--plugins={probe}", "--list"]
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RECOG_HUGE_PAGES")}
    result = subprocess.run(
        [sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(seen.read_text()) == ["glibc.malloc.hugetlb=1", command]


@pytest.mark.parametrize(
    ("environ", "thp", "restarts"),
    [
        ({}, "always [madvise] never", True),
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "always [madvise] never", True),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "always [madvise] never", False),
        ({"RECOG_HUGE_PAGES": "0"}, "always [madvise] never", False),
        ({}, "[always] madvise never", False),
        ({}, "always madvise [never]", False),
    ],
)
def test_the_huge_pages_restart_keeps_what_the_user_set(monkeypatch, environ, thp, restarts):
    from recog import startup

    for name in ("GLIBC_TUNABLES", "RECOG_HUGE_PAGES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(startup.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(startup.sys, "platform", "linux")
    monkeypatch.setattr(startup.Path, "read_text", lambda self: thp)
    calls = []
    monkeypatch.setattr(startup.os, "execv", lambda *args: calls.append(args))
    startup.restart_with_huge_pages()
    assert bool(calls) == restarts
    if restarts:
        assert calls == [(sys.executable, [sys.executable, *sys.orig_argv[1:]])]
        tunables = os.environ["GLIBC_TUNABLES"].split(":")
        assert tunables[-1] == "glibc.malloc.hugetlb=1"
        assert tunables[:-1] == ([environ["GLIBC_TUNABLES"]] if "GLIBC_TUNABLES" in environ else [])


def test_only_recogs_training_and_evaluation_binaries_restart(monkeypatch):
    from recog import startup

    cases = [
        (["-m"], [sys.executable, "-m", "recog.main", "--list"], True),
        (["-m"], [sys.executable, "-X", "importtime", "-m", "recog.eval"], True),
        (["-m"], [sys.executable, "-m", "recog.predict", "photo.jpg"], False),
        (["-m"], [sys.executable, "-m", "other_tool", "recog"], False),
        (["train.py"], [sys.executable, "train.py", "-m", "recog.main"], False),
        (["-c"], [sys.executable, "-c", "import recog"], False),
        (["/venv/bin/recog-train"], [sys.executable, "/venv/bin/recog-train", "--list"], True),
        (["/venv/bin/recog-export"], [sys.executable, "/venv/bin/recog-export"], False),
        ([""], [sys.executable], False),
    ]
    for argv, orig_argv, expected in cases:
        monkeypatch.setattr(startup.sys, "argv", argv)
        monkeypatch.setattr(startup.sys, "orig_argv", orig_argv)
        assert startup.running_a_computing_binary() == expected, orig_argv
