"""The training and eval binaries as a user runs them: real subprocesses on short digits runs."""

import json
import shutil

import pytest
from conftest import REPO, read_jsonl, run_binary, snapshot

from recog.train import checkpoint, workdir_files


def test_main_writes_checkpoints_metrics_config_and_progress(trained_workdir):
    workdir, result = trained_workdir
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


def test_eval_once_then_follow_evaluates_each_checkpoint_once(trained_workdir, tmp_path):
    source, _ = trained_workdir
    workdir = tmp_path / "copy"
    shutil.copytree(source, workdir)
    once = run_binary("eval", f"--workdir={workdir}", "--once")  # the latest, step 60
    assert once.returncode == 0, once.stderr[-3000:]
    mngr = checkpoint.manager(workdir, for_reading=True)
    why = checkpoint.why_chosen(mngr, workdir_files.read_config(workdir), 60, None)
    printed = json.loads(once.stdout.strip().splitlines()[-1])
    assert printed["step"] == 60 and printed["num_examples"] == 360
    assert f"Evaluating step 60: {why}" in once.stderr and why.startswith("the latest")
    follow = run_binary("eval", f"--workdir={workdir}", "--poll_seconds=0.1")
    assert follow.returncode == 0, follow.stderr[-3000:]
    rows = read_jsonl(workdir / "eval" / "metrics.jsonl")
    assert sorted(r["step"] for r in rows) == [30, 60]  # the chosen step not a second time
    for row in rows:
        assert {"step", "accuracy", "loss", "num_examples", "split", "top5_accuracy", "ece"} <= set(
            row
        )
        assert sum(map(sum, row["confusion_matrix"])) == 360
        assert sum(c["support"] for c in row["per_class"].values()) == 360
        assert 0 <= row["ece"] <= 1 and row["top5_accuracy"] >= row["accuracy"]
    report = (workdir / "eval" / "report.md").read_text()
    assert "# Evaluation at step 60" in report and "| 7 |" in report
    for picture in ("confusion_matrix.png", "training_curves.png"):
        assert (workdir / "eval" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    training_eval = [
        m for m in read_jsonl(workdir / "metrics.jsonl") if m["step"] == 60 and "eval/accuracy" in m
    ]
    final = next(r for r in rows if r["step"] == 60)
    assert final["accuracy"] == pytest.approx(training_eval[0]["eval/accuracy"])
    assert list((workdir / "eval").glob("events.out.tfevents.*"))


def test_rerun_of_a_finished_run_changes_nothing(trained_workdir):
    workdir, _ = trained_workdir
    before = snapshot(workdir / "checkpoints")
    result = run_binary("main", "--experiment=digits_cnn:quick", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already holds the final step 60" in result.stderr
    assert snapshot(workdir / "checkpoints") == before


def test_user_errors_are_one_sentence_and_change_nothing(trained_workdir, tmp_path):
    workdir, _ = trained_workdir
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
    data_dir = tmp_path / "tfds"  # where the data set would be prepared: the refusals come first
    for args, expected in cases.items():
        data_flag = f"--config.data.data_dir={data_dir}"
        result = run_binary("main", *args, data_flag, f"--workdir={workdir}")
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert f"error: {expected}" in result.stderr, (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
    assert snapshot(workdir) == before
    assert not data_dir.exists()
