"""The training and eval binaries as a user runs them: real subprocesses on short digits runs."""

import json
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import REPO, run_binary


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def snapshot(folder):
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def final_params(workdir, step):
    restored = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "default")
    return restored["params"], restored["model_state"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One short training run (60 steps, checkpoints at 30 and 60), shared by the tests below."""
    workdir = tmp_path_factory.mktemp("quick")
    result = run_binary("main", "--experiment=digits_cnn:quick", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_main_writes_checkpoints_metrics_config_and_progress(quick_run):
    workdir, result = quick_run
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["30", "60"]
    config = json.loads((workdir / "config.json").read_text())
    assert config["experiment"] == "digits_cnn:quick" and config["num_steps"] == 60
    lines = read_jsonl(workdir / "metrics.jsonl")
    train = [m for m in lines if "train/loss" in m]
    evals = [m for m in lines if "eval/accuracy" in m]
    assert [m["step"] for m in train] == [10, 20, 30, 40, 50, 60]
    assert [m["step"] for m in evals] == [30, 60]
    assert train[-1]["train/loss"] < train[0]["train/loss"]
    assert evals[-1]["eval/accuracy"] > 0.7 and evals[-1]["eval/num_examples"] == 360
    assert train[-1]["train/images_per_sec"] > 0
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert "step 60/60 (100%)" in result.stderr and "img/s | ETA" in result.stderr
    assert "Done: step 60, eval accuracy" in result.stderr


def test_eval_once_then_follow_evaluates_each_checkpoint_once(quick_run, tmp_path):
    source, _ = quick_run
    workdir = tmp_path / "copy"
    shutil.copytree(source, workdir)
    once = run_binary("eval", f"--workdir={workdir}", "--once")
    assert once.returncode == 0, once.stderr[-3000:]
    printed = json.loads(once.stdout.strip().splitlines()[-1])
    assert printed["step"] == 60 and printed["num_examples"] == 360
    follow = run_binary("eval", f"--workdir={workdir}", "--poll_seconds=0.1")
    assert follow.returncode == 0, follow.stderr[-3000:]
    rows = read_jsonl(workdir / "eval" / "metrics.jsonl")
    assert sorted(r["step"] for r in rows) == [30, 60]  # 60 was not evaluated a second time
    for row in rows:
        assert {"step", "accuracy", "loss", "num_examples", "split"} <= set(row)
    training_eval = [
        m for m in read_jsonl(workdir / "metrics.jsonl") if m["step"] == 60 and "eval/accuracy" in m
    ]
    final = next(r for r in rows if r["step"] == 60)
    assert final["accuracy"] == pytest.approx(training_eval[0]["eval/accuracy"])
    assert list((workdir / "eval").glob("events.out.tfevents.*"))


def test_rerun_of_a_finished_run_changes_nothing(quick_run):
    workdir, _ = quick_run
    before = snapshot(workdir / "checkpoints")
    result = run_binary("main", "--experiment=digits_cnn:quick", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already holds the final step 60" in result.stderr
    assert snapshot(workdir / "checkpoints") == before


def test_killed_run_resumes_to_the_same_state(tmp_path):
    args = [
        "--experiment=digits_cnn",
        "--config.num_steps=400",
        "--config.checkpoint_every=100",
        "--config.log_every=10",
        "--config.eval_every=400",
    ]
    reference = tmp_path / "reference"
    result = run_binary("main", *args, f"--workdir={reference}")
    assert result.returncode == 0, result.stderr[-3000:]

    workdir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "recog.main", *args, f"--workdir={workdir}"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    for line in process.stderr:
        if "step 250/400" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert "400" not in {p.name for p in (workdir / "checkpoints").iterdir()}

    resumed = run_binary("main", *args, f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from the checkpoint at step 200" in resumed.stderr
    for a, b in zip(final_params(reference, 400), final_params(workdir, 400), strict=True):
        np.testing.assert_array_equal(flatten(a), flatten(b))
    final_eval = lambda w: [m for m in read_jsonl(w / "metrics.jsonl") if "eval/accuracy" in m][-1]
    assert final_eval(reference)["eval/accuracy"] == final_eval(workdir)["eval/accuracy"]


def flatten(tree):
    return np.concatenate([np.asarray(leaf).ravel() for leaf in jax.tree.leaves(tree)])


def test_user_errors_are_one_sentence_and_change_nothing(quick_run, tmp_path):
    workdir, _ = quick_run
    before = snapshot(workdir)
    other_experiment = tmp_path / "other_experiment.py"
    other_experiment.write_text((REPO / "experiments" / "digits_cnn.py").read_text())
    cases = {
        ("--experiment=digits_cn",): "unknown experiment 'digits_cn'; did you mean 'digits_cnn'?",
        (
            "--experiment=digits_cnn",
            "--config.optimizer.lrr=1",
        ): "unknown config key 'optimizer.lrr'",
        (
            "--experiment=digits_cnn",
            "--config.num_steps=ten",
        ): "config key 'num_steps' expects an integer",
        ("--experiment=digits_cnn", "--config.model.name=resnet"): "unknown model 'resnet'",
        (
            f"--experiment={other_experiment}",
        ): f"work directory {workdir} holds checkpoints of experiment 'digits_cnn'",
    }
    for args, expected in cases.items():
        result = run_binary("main", *args, f"--workdir={workdir}")
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert f"error: {expected}" in result.stderr, (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
    assert snapshot(workdir) == before
