"""tpu_setup.sh: shellcheck-clean, and what each subcommand would run under --dry-run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

SCRIPT = REPO / "tpu_setup.sh"
POD = ["--dry-run", "--project=my-proj", "--zone=us-east5-a", "--name=pod", "--bucket=gs://bkt"]


def dry_run(command, *args):
    result = subprocess.run(
        ["bash", str(SCRIPT), command, *POD, *args], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_shellcheck_passes():
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    shellcheck = shutil.which("shellcheck", path=search)
    assert shellcheck, "shellcheck is missing: pip install -e '.[test]' installs it"
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_create_direct_and_queued():
    direct = dry_run("create", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base")
    assert direct.startswith(
        "gcloud compute tpus tpu-vm create pod --project=my-proj --zone=us-east5-a "
        "--accelerator-type=v4-32 --version=tpu-ubuntu2204-base"
    )
    queued = dry_run("create", "--queued", "--spot", "--accelerator-type=v5litepod-16")
    assert "gcloud compute tpus queued-resources create pod" in queued
    assert "--node-id=pod --accelerator-type=v5litepod-16" in queued and "--spot" in queued


def test_install_ships_the_tree_to_every_worker():
    out = dry_run("install").splitlines()
    assert out[0].startswith("git -C") and "archive" in out[0]
    assert out[1].startswith("gcloud compute tpus tpu-vm scp") and "--worker=all" in out[1]
    assert "--worker=all" in out[2] and "pip install -q -e '\\''./recog[tpu]'\\''" in out[2]


def test_run_starts_the_experiment_on_all_workers_with_gcs_paths():
    out = dry_run("run", "--experiment=cats_resnet:cpu", "--", "--config.num_steps=50")
    assert "--worker=all" in out
    assert "TFDS_DATA_DIR=gs://bkt/tensorflow_datasets" in out
    assert (
        "-m recog.main --experiment=cats_resnet:cpu --workdir=gs://bkt/workdirs/cats_resnet_cpu"
        in out
    )
    assert "--config.num_steps=50" in out


def test_logs_stop_delete():
    assert "--worker=0 '--command=tail -n 50 -f ~/recog.log'" in dry_run("logs")
    stop = dry_run("stop")
    assert "--worker=all" in stop and "pkill -TERM" in stop
    assert dry_run("delete").startswith("gcloud compute tpus tpu-vm delete pod")
    assert "queued-resources delete pod" in dry_run("delete", "--queued")


def test_run_without_bucket_and_unknown_input_fail_clearly():
    result = subprocess.run(
        ["bash", str(SCRIPT), "run", "--dry-run"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2 and "--bucket" in result.stderr
    result = subprocess.run(
        ["bash", str(SCRIPT), "launch", "--dry-run"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2 and "create install run logs stop delete" in result.stderr
