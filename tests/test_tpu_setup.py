"""tpu_setup.sh: shellcheck-clean, and what each subcommand would run under --dry-run; the
constraints file that its `install`, CI and the README's commands share."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = REPO / "tpu_setup.sh"
CONSTRAINTS = REPO / "constraints.txt"
POD = ["--dry-run", "--project=my-proj", "--zone=us-east5-a", "--name=pod", "--bucket=gs://bkt"]
COMMANDS = ["create", "install", "run", "logs", "stop", "delete"]


def script(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO)


def dry_run(command, *args):
    result = script(command, *POD, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def remote_command(line):
    """The --command=... that a printed `gcloud ... ssh` line runs on the workers, read the way a
    shell reads the pasted line; checked to be valid bash."""
    words = shlex.split(line)
    assert words[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"], line
    [command] = [w.removeprefix("--command=") for w in words if w.startswith("--command=")]
    syntax = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    return command


def test_shellcheck_passes():
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    shellcheck = shutil.which("shellcheck", path=search)
    assert shellcheck, "shellcheck is missing: pip install -e '.[test]' installs it"
    scripts = [str(SCRIPT), str(REPO / "benchmarks" / "accelerator.sh")]
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_create_direct_and_queued():
    direct = dry_run("create", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base")
    assert direct.splitlines() == [
        "gcloud compute tpus tpu-vm create pod --project=my-proj --zone=us-east5-a "
        "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base"
    ]
    queued = dry_run("create", "--queued", "--spot", "--accelerator-type=v5litepod-16").splitlines()
    assert queued[0] == (
        "gcloud compute tpus queued-resources create pod --project=my-proj --zone=us-east5-a "
        "--node-id=pod --accelerator-type=v5litepod-16 --runtime-version=tpu-ubuntu2204-base --spot"
    )
    assert queued[1].startswith("# wait until: gcloud compute tpus queued-resources describe pod")


def test_install_sets_up_python_312_with_uv_and_ci_versions_on_every_worker():
    out = dry_run("install").splitlines()
    assert len(out) == 3
    archive = os.environ.get("TMPDIR", "/tmp") + "/recog-src.tar.gz"
    assert out[0] == f"git -C {REPO} archive --format=tar.gz --prefix=recog/ -o {archive} HEAD"
    assert out[1].startswith("gcloud compute tpus tpu-vm scp") and out[1].endswith(
        "pod:recog-src.tar.gz --project=my-proj --zone=us-east5-a --worker=all"
    )
    assert "--worker=all" in shlex.split(out[2])
    steps = [step.strip() for step in remote_command(out[2]).split("&&")]
    uv = "$HOME/.local/bin/uv"
    assert steps == [
        "set -o pipefail; rm -rf recog",
        "tar xzf recog-src.tar.gz",
        # uv, a pinned release, whatever Python (if any) the image ships...
        "curl -LsSf https://astral.sh/uv/0.13.9/install.sh"
        " | env UV_UNMANAGED_INSTALL=$HOME/.local/bin sh -s -- --quiet",
        # ...makes the venv with a Python 3.12 of its own...
        f"{uv} venv --clear --managed-python --python 3.12 recog-venv",
        # ...and installs recog[tpu] there at the versions CI tested
        f"{uv} pip install -q --python recog-venv/bin/python -c recog/constraints.txt"
        " -e './recog[tpu]'",
        "recog-venv/bin/python -c 'import sys, jax; print(sys.version.split()[0], "
        "jax.__version__, jax.process_index(), jax.local_device_count())'",
    ]


def test_run_starts_the_experiment_in_the_venv_on_all_workers_with_gcs_paths():
    out = dry_run("run", "--experiment=cats_resnet:cpu", "--", "--config.num_steps=50").splitlines()
    assert "--worker=all" in shlex.split(out[0])
    assert remote_command(out[0]) == (
        "cd recog && TFDS_DATA_DIR=gs://bkt/tensorflow_datasets nohup ~/recog-venv/bin/python "
        "-m recog.main --experiment=cats_resnet:cpu --workdir=gs://bkt/workdirs/cats_resnet_cpu "
        "--config.num_steps=50 > ~/recog.log 2>&1 &"
    )
    assert out[1].startswith("# work directory: gs://bkt/workdirs/cats_resnet_cpu")


def test_logs_stop_delete():
    logs = dry_run("logs")
    assert "--worker=0" in shlex.split(logs) and remote_command(logs) == "tail -n 50 -f ~/recog.log"
    stop = dry_run("stop")
    assert "--worker=all" in shlex.split(stop)
    assert remote_command(stop) == "pkill -TERM -f '[r]ecog[.]main' || true"
    assert dry_run("delete").splitlines() == [
        "gcloud compute tpus tpu-vm delete pod --project=my-proj --zone=us-east5-a --quiet"
    ]
    assert dry_run("delete", "--queued").splitlines() == [
        "gcloud compute tpus queued-resources delete pod --project=my-proj --zone=us-east5-a "
        "--force --quiet"
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_come_in_any_order(command):
    flags = [*POD, "--queued", "--experiment=digits_cnn"]
    first = script(command, *flags, "--", "--config.num_steps=5")
    assert first.returncode == 0, first.stderr
    for args in (
        [*flags, command],
        [*flags[:2], command, *flags[2:]],
        [*reversed(flags), command],
    ):
        result = script(*args, "--", "--config.num_steps=5")
        assert (result.returncode, result.stdout) == (0, first.stdout), args


def test_arguments_after_double_dash_are_recogs_even_if_they_look_like_a_command():
    out = dry_run("run", "--", "--config.note=x", "install")
    assert remote_command(out.splitlines()[0]).endswith(
        "--workdir=gs://bkt/workdirs/cats_resnet --config.note=x install > ~/recog.log 2>&1 &"
    )


def test_bad_input_fails_clearly():
    result = script("run", "--dry-run")
    assert result.returncode == 2 and "--bucket" in result.stderr
    for args in (["launch", "--dry-run"], ["--dry-run", "--name=pod"]):
        result = script(*args)
        assert result.returncode == 2 and "create install run logs stop delete" in result.stderr
    result = script("--dry-run", "install", "run")
    assert result.returncode == 2 and "one command at a time" in result.stderr
    result = script("install", "--dry-run", "--nmae=pod")
    assert result.returncode == 2 and "unknown option --nmae=pod" in result.stderr
    for args in ([], ["--help"], ["--dry-run", "install", "-h"]):
        result = script(*args)
        assert result.returncode == 0 and "./tpu_setup.sh install" in result.stdout


def test_constraints_pin_what_ci_installs_and_ci_and_readme_use_them():
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][A-Za-z0-9.]*)", line)
            assert match, f"constraints.txt: not NAME==VERSION: {line}"
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    core = ["jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets"]
    assert set(core) <= set(pins)
    if sys.platform == "linux":
        assert "tensorflow-cpu" in pins
    # This test environment was installed with them (CI's command below), so it runs these versions.
    for name, version in pins.items():
        if name == "tensorflow-cpu" and sys.platform != "linux":
            continue
        # A local label is the same release's build (torch's CPU wheel is 2.13.0+cpu).
        assert metadata.version(name).split("+")[0] == version, name
    ci = (REPO / ".ci" / "run").read_text().splitlines()[-1]
    assert ".venv/bin/pip install -q -c constraints.txt -e '.[test,pretrained]'" in ci
    assert ci in (REPO / "README.md").read_text().splitlines()
