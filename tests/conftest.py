"""Test set-up: 8 simulated CPU devices, a private TFDS data directory and a private JAX
compilation cache, all set before JAX or TFDS is imported and inherited by the binaries the tests
start as subprocesses. Those binaries compile the same train and eval steps again and again:
with the cache, `python -m pytest -q -n 0 tests/test_multihost.py tests/test_faults.py
tests/test_binaries.py` took 345 s instead of 464 (2026-12-03, 2 cores).

The suite runs on the CPU platform also on a GPU or TPU host: its tests rely on the simulated
devices. What accelerators run is tested by lowering programs for them (tests/test_models.py)
and on the accelerator itself by benchmarks/accelerator.sh.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
# Under pytest-xdist each worker prepares its data sets in a folder of its own, even where the user
# set TFDS_DATA_DIR: two TFDS builders preparing one data set in one folder at once would collide.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER or "TFDS_DATA_DIR" not in os.environ:
    os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix=f"recog-tfds-{_WORKER or 'main'}-")
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="recog-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

REPO = Path(__file__).resolve().parent.parent
CATS_DOGS = REPO.parent / "shared" / "data" / "cats_dogs"  # real photos, for tests only


# The test files from longest to shortest (their tests' seconds summed from `python -m pytest -q
# --durations=60` at 9f48b3a, 2026-12-07: 225 for the first, 20 for the last listed; the rest
# are shorter): pytest-xdist hands out files in collection order (--no-loadscope-reorder in
# pyproject.toml), so the files left to start last are short ones, and the two workers finish at
# about the same time.
LONGEST_FILES_FIRST = (
    "test_pretrained_finetuning.py",
    "test_flagship.py",
    "test_views.py",
    "test_pretrained.py",
    "test_faults.py",
    "test_models.py",
    "test_multihost.py",
    "test_benchmarks.py",
    "test_recipes.py",
    "test_exactness.py",
    "test_plugin_walkthrough.py",
    "test_predict.py",
    "test_main_job.py",
    "test_p4m_resnet.py",
    "test_cats_experiment.py",
    "test_train.py",
    "test_binaries.py",
    "test_install.py",
    "test_plugins.py",
)


# The tests that train, start binaries or compile large programs (3 s or more each in
# `python -m pytest -q --durations=0` at 3ef7227): `pytest -m "not slow"` leaves them out, the
# fast tier of the edit-test loop. "*" is the whole file.
SLOW_TESTS = {
    "test_augment.py": (
        "test_batch_augmentations",
        "test_inside_a_tf_data_pipeline_of_unknown_image_sizes",
        "test_mixup_and_cutmix_mix_images_and_targets_alike",
        "test_randaugment_on_the_device_draws_operations_per_image",
    ),
    "test_benchmarks.py": "*",
    "test_binaries.py": "*",
    "test_cats_experiment.py": ("test_cats_resnet_cpu_trains_on_a_folder",),
    "test_cli.py": ("test_a_reader_that_stops_early_ends_the_listing_without_a_traceback",),
    "test_exactness.py": "*",
    "test_export.py": "*",
    "test_faults.py": "*",
    "test_finetune.py": (
        "test_a_run_from_a_work_directory_with_frozen_layers",
        "test_init_from_a_work_directory_takes_only_the_weights",
        "test_torchvision_weights_give_pytorchs_logits",
    ),
    "test_flagship.py": "*",
    "test_install.py": ("test_installed_copy_lists_and_trains_from_another_directory",),
    "test_main_job.py": "*",
    "test_models.py": (
        "test_accelerator_programs_hold_stock_ops_only",
        "test_bfloat16_computes_in_bfloat16_with_float32_state",
        "test_bfloat16_forward_is_close_to_float32",
        "test_conv_as_a_matmul_equals_xla_conv",
        "test_dropout_and_stochastic_depth_follow_config_and_train_mode",
        "test_forward_and_reverse_mode_agree",
        "test_forward_mode_differentiation_traces",
        "test_max_pool_equals_nnx_max_pool_and_its_derivatives",
        "test_model_plugin_outside_the_repo_trains",
    ),
    "test_multihost.py": "*",
    "test_p4m_resnet.py": "*",
    "test_plugin_walkthrough.py": "*",
    "test_plugins.py": (
        "test_broken_plugin_is_one_line_error_not_traceback",
        "test_list_shows_plugins_from_all_three_sources",
        "test_shapes_dataset_plugin_trains_through_the_binary",
    ),
    "test_predict.py": "*",
    "test_pretrained.py": "*",
    "test_pretrained_finetuning.py": "*",
    "test_recipes.py": "*",
    "test_train.py": "*",
    "test_views.py": ("test_the_robust_recipe_recognises_turned_photos_the_upright_one_does_not",),
}


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
    for item in items:
        slow = SLOW_TESTS.get(item.path.name, ())
        if slow == "*" or item.originalname in slow:
            item.add_marker(pytest.mark.slow)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for jax.distributed's coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_with_devices(count: int) -> dict:
    """The environment for a binary that sees `count` simulated CPU devices instead of 8."""
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"}


def run_binary(
    module: str, *args: str, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Runs `python -m recog.<module> args...` from the repository root; returns the result."""
    return subprocess.run(
        [sys.executable, "-m", f"recog.{module}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


@pytest.fixture(scope="session")
def digits_source():
    """The embedded digits data set, prepared once into the session's TFDS data directory."""
    from recog import data
    from recog.experiments import load

    return data.make_source(load("digits_cnn").data)


@pytest.fixture
def offline(monkeypatch):
    """No network, and a failure if anything still tries to download."""
    import urllib.error
    import urllib.request

    import tensorflow_datasets as tfds

    def unreachable(url, timeout):
        raise urllib.error.URLError("no network in this test")

    def must_not_download(self, *args, **kwargs):
        raise AssertionError("TFDS download attempted")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", must_not_download)


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
    """One short real training run (digits_cnn:quick: 60 steps, checkpoints at 30 and 60) shared
    by the tests; tests that change it work on a copy."""
    workdir = tmp_path_factory.mktemp("quick") / "run"
    result = run_binary("main", "--experiment=digits_cnn:quick", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time, to prove nothing changed."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def restored_checkpoint(workdir: Path, step: int) -> dict:
    """A saved train state, restored onto this process's first device whatever topology wrote
    it."""
    import jax
    import orbax.checkpoint as ocp

    path = Path(workdir) / "checkpoints" / str(step) / "default"
    checkpointer = ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        checkpointer.metadata(path).item_metadata.tree,
    )
    return checkpointer.restore(path, target)


def checkpoint_vector(workdir: Path, step: int, parts=("params", "model_state", "opt_state")):
    """A saved train state as one float64 vector (see restored_checkpoint)."""
    import jax
    import numpy as np

    restored = restored_checkpoint(workdir, step)
    leaves = jax.tree.leaves({k: restored[k] for k in parts})
    return np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in leaves])
