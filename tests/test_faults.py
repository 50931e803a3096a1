"""Fault injection on real runs: SIGKILL, SIGTERM, a truncated checkpoint, a diverging loss, and
restoring on another device count. Nothing a run wrote may be lost or taken for good when bad."""

import os
import shutil
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
from conftest import REPO, checkpoint_vector, env_with_devices, read_jsonl, run_binary, snapshot
from etils import epath

from recog import inference, parallel
from recog.train import checkpoint, workdir_files
from recog.train.metrics import set_aside_lines_after
from recog.train.step import build_steps

LONG_RUN = [
    "--experiment=digits_cnn",
    "--config.num_steps=200",
    "--config.checkpoint_every=50",
    "--config.eval_every=50",
    "--config.log_every=10",
    "--config.keep_checkpoints=10",
]


def run_until(args, workdir, marker, sig):
    """Starts training and sends `sig` once the log shows `marker`; returns the exit code."""
    process = subprocess.Popen(
        [sys.executable, "-m", "recog.main", *args, f"--workdir={workdir}"],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    for line in process.stderr:
        if marker in line:
            process.send_signal(sig)
            break
    process.stderr.read()
    return process.wait(timeout=120)


def test_kill_and_sigterm_at_several_points_resume_to_the_same_state(tmp_path):
    reference = tmp_path / "reference"
    # An eval follower started before training: it must evaluate every checkpoint exactly once.
    follower_log = (tmp_path / "follower.log").open("w")
    follower = subprocess.Popen(
        [sys.executable, "-m", "recog.eval", f"--workdir={reference}", "--poll_seconds=0.2"],
        cwd=REPO,
        stdout=follower_log,
        stderr=subprocess.STDOUT,
    )
    result = run_binary("main", *LONG_RUN, f"--workdir={reference}")
    assert result.returncode == 0, result.stderr[-3000:]
    follower.wait(timeout=180)
    assert follower.returncode == 0, (tmp_path / "follower.log").read_text()[-3000:]
    followed = [row["step"] for row in read_jsonl(reference / "eval" / "metrics.jsonl")]
    assert followed == [50, 100, 150, 200]

    workdir = tmp_path / "faulty"
    assert run_until(LONG_RUN, workdir, "step 80/200", signal.SIGKILL) == -signal.SIGKILL
    assert checkpoint.manager(workdir, for_reading=True).all_steps() == [50]

    assert run_until(LONG_RUN, workdir, "step 130/200", signal.SIGTERM) == 0  # saved, clean exit
    steps = checkpoint.manager(workdir, for_reading=True).all_steps()
    assert steps[:2] == [50, 100] and len(steps) == 3 and 130 <= steps[2] < 200
    np.testing.assert_array_equal(
        checkpoint_vector(reference, 100), checkpoint_vector(workdir, 100)
    )

    assert run_until(LONG_RUN, workdir, "step 170/200", signal.SIGKILL) == -signal.SIGKILL
    resumed = run_binary("main", *LONG_RUN, f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from the checkpoint at step 150" in resumed.stderr
    np.testing.assert_array_equal(
        checkpoint_vector(reference, 200), checkpoint_vector(workdir, 200)
    )

    def final_eval(workdir):
        row = [m for m in read_jsonl(workdir / "metrics.jsonl") if "eval/accuracy" in m][-1]
        return {k: v for k, v in row.items() if k != "wall_time"}

    assert final_eval(reference) == final_eval(workdir)

    def train_steps(path):
        return [m["step"] for m in read_jsonl(path) if "train/loss" in m]

    # The lines the killed runs wrote past their last checkpoint were set aside, not repeated.
    assert train_steps(workdir / "metrics.jsonl") == train_steps(reference / "metrics.jsonl")
    aside = train_steps(workdir / "metrics.superseded.jsonl")
    assert all(50 < step <= 100 or 150 < step < 200 for step in aside)
    assert any(step <= 100 for step in aside) and any(step > 150 for step in aside)


def test_truncated_newest_checkpoint_is_skipped_and_kept_aside(trained_workdir, tmp_path):
    original, _ = trained_workdir
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    for path in (workdir / "checkpoints" / "60").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            os.truncate(path, path.stat().st_size // 2)
    result = run_binary("main", "--experiment=digits_cnn:quick", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Skipped the unreadable checkpoint 60" in result.stderr
    assert "Resuming from the checkpoint at step 30" in result.stderr
    assert (workdir / "checkpoints_unreadable" / "60").is_dir()
    np.testing.assert_array_equal(checkpoint_vector(original, 60), checkpoint_vector(workdir, 60))


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(trained_workdir, tmp_path):
    original, _ = trained_workdir
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    before = snapshot(workdir / "checkpoints")
    result = run_binary(
        "main",
        "--experiment=digits_cnn:quick",
        "--config.num_steps=120",
        "--config.optimizer.lr=1e30",
        f"--workdir={workdir}",
    )
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: training diverged: the loss was ")
    assert "The last checkpoint (step 60)" in message
    assert "Traceback" not in result.stderr
    assert snapshot(workdir / "checkpoints") == before


def test_restore_on_another_device_count(trained_workdir, tmp_path):
    original, _ = trained_workdir
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    env = env_with_devices(3)
    result = run_binary("eval", f"--workdir={workdir}", "--once", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 3 device(s)" in result.stderr  # trained on 8
    row = read_jsonl(workdir / "eval" / "metrics.jsonl")[-1]
    trained = [m for m in read_jsonl(workdir / "metrics.jsonl") if "eval/accuracy" in m][-1]
    assert row["step"] == 60
    np.testing.assert_allclose(row["accuracy"], trained["eval/accuracy"])
    np.testing.assert_allclose(row["loss"], trained["eval/loss"], rtol=1e-5)


def test_keeps_the_latest_and_the_best(tmp_path):
    mngr = checkpoint.manager(tmp_path, keep=2, best_metric="accuracy")
    state = {"x": np.zeros(3, np.float32)}
    for step, accuracy in enumerate([0.5, 0.9, 0.6, 0.7, 0.65, 0.66], start=1):
        checkpoint.save(mngr, step, state, {"accuracy": accuracy})
    mngr.wait_until_finished()
    assert mngr.all_steps() == [2, 5, 6]
    assert checkpoint.best_step(mngr, "accuracy") == 2
    loss_mngr = checkpoint.manager(tmp_path / "by_loss", keep=1, best_metric="loss")
    for step, loss in enumerate([3.0, 1.0, 2.0], start=1):
        checkpoint.save(loss_mngr, step, state, {"loss": loss})
    loss_mngr.wait_until_finished()
    assert loss_mngr.all_steps() == [2, 3]


def test_sigterm_handler_only_sets_a_flag():
    watch = checkpoint.PreemptionWatch()
    try:
        assert not watch.signalled
        timer = threading.Timer(0, lambda: os.kill(os.getpid(), signal.SIGTERM))
        timer.start()
        timer.join()
        assert watch.signalled
    finally:
        watch.close()


def test_the_best_checkpoint_survives_a_restart(tmp_path):
    state = {"x": np.zeros(3, np.float32)}
    mngr = checkpoint.manager(tmp_path, keep=1, best_metric="accuracy")
    for step, accuracy in [(1, 0.5), (2, 0.9), (3, 0.6)]:
        checkpoint.save(mngr, step, state, {"accuracy": accuracy})
    mngr.wait_until_finished()
    mngr.close()
    mngr = checkpoint.manager(tmp_path, keep=1, best_metric="accuracy")  # a resumed run
    checkpoint.save(mngr, 4, state, {"accuracy": 0.7})
    mngr.wait_until_finished()
    assert mngr.all_steps() == [2, 4]
    assert checkpoint.best_step(checkpoint.manager(tmp_path, for_reading=True), "accuracy") == 2


def test_metric_lines_past_the_resumed_step_are_set_aside_not_lost(tmp_path):
    path = epath.Path(tmp_path / "metrics.jsonl")
    lines = [f'{{"step": {step}, "train/loss": 1.0}}\n' for step in (10, 20, 30, 40)]
    path.write_text("".join(lines) + '{"step": 5')  # a line cut short by a kill
    (tmp_path / "metrics.superseded.jsonl").write_text('{"step": 99}\n')  # an earlier restart's

    set_aside_lines_after(path, 20)
    assert path.read_text() == "".join(lines[:2])
    assert (tmp_path / "metrics.superseded.jsonl").read_text() == (
        '{"step": 99}\n' + "".join(lines[2:]) + '{"step": 5\n'
    )
    set_aside_lines_after(path, 20)  # nothing more to move: both files stay as they are
    assert path.read_text() == "".join(lines[:2])


def abstract_train_state(workdir):
    """The abstract train state of the run in `workdir`."""
    config = workdir_files.read_config(workdir)
    dataset = workdir_files.read_dataset_info(workdir)
    mesh = parallel.make_mesh(jax.devices()[:1])
    steps = build_steps(config, len(dataset["class_names"]), dataset["image_shape"][-1], mesh)
    return steps.abstract_state


def test_weights_only_restore_reads_no_optimizer_state(trained_workdir):
    workdir, _ = trained_workdir
    abstract_state = abstract_train_state(workdir)
    mngr = checkpoint.manager(workdir, for_reading=True)
    full = checkpoint.restore(mngr, 60, abstract_state, workdir)
    reader = checkpoint.manager(workdir, for_reading=True)  # a manager restores one way only
    weights = checkpoint.restore(reader, 60, abstract_state, workdir, weights_only=True)
    assert "opt_state" in full and sorted(weights) == ["model_state", "params"]
    for key in weights:
        jax.tree.map(np.testing.assert_array_equal, weights[key], full[key])


def test_moving_average_weights_restore_without_optimizer_state(tmp_path):
    result = run_binary(
        "main",
        "--experiment=digits_cnn:quick",
        "--config.ema_decay=0.5",
        "--config.num_steps=2",
        "--config.checkpoint_every=2",
        "--config.eval_every=2",
        f"--workdir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ema = inference.load(tmp_path, weights="ema")
    raw = inference.load(tmp_path, weights="raw")
    full = checkpoint.restore(
        checkpoint.manager(tmp_path, for_reading=True), 2, abstract_train_state(tmp_path), tmp_path
    )
    jax.tree.map(np.testing.assert_array_equal, ema.params, full["ema_params"])
    jax.tree.map(np.testing.assert_array_equal, raw.params, full["params"])


def test_a_run_the_checkpoints_refuse_leaves_the_workdir_as_it_was(trained_workdir, tmp_path):
    original, _ = trained_workdir
    workdir = tmp_path / "run"
    shutil.copytree(original, workdir)
    before = snapshot(workdir)
    result = run_binary(
        "main",
        "--experiment=digits_cnn:quick",
        "--config.model.widths=(16, 32)",
        f"--workdir={workdir}",
    )
    assert result.returncode == 2
    assert f"the checkpoint at step 60 in {workdir} cannot be restored" in result.stderr
    assert snapshot(workdir) == before  # config.json and dataset.json too: bytes and mtimes
