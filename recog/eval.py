"""Evaluates the checkpoints of a training work directory; needs no flags but --workdir.

    python -m recog.eval --workdir=workdirs/digits_cnn --once   # one checkpoint, now
    python -m recog.eval --workdir=workdirs/digits_cnn          # each new checkpoint, once
    python -m recog.eval --workdir=workdirs/digits_cnn --robustness  # occlusion and rotation
    python -m recog.eval --workdir=DIR --robustness --baseline=OTHER_DIR  # beside another run
    python -m recog.eval --workdir=DIR --once --config.data.eval_split=train
    python -m recog.eval --workdir=DIR --once --config.data.dir=/path/to/held_out_folder

Without --once it follows the training run: every checkpoint is evaluated exactly once (steps
already in eval/metrics.jsonl are skipped, so a restarted follower picks up where it stopped; one
started before training waits for it), and it exits after the final step (config.num_steps), or
when nothing new has appeared for --timeout_seconds. --once and --robustness evaluate one
checkpoint: --step=N, else the latest, as every binary picks one (checkpoint.choose_step).

Results: one JSON object per line in WORKDIR/eval/metrics.jsonl (step, split, loss, accuracy,
top-k accuracy, ece, macro_f1, num_examples, per_class precision/recall/F1, confusion_matrix); the
scalars also go to TensorBoard in WORKDIR/eval; WORKDIR/eval/report.md shows the latest with a
confusion-matrix picture and the training curves.
"""

import json
import time

from absl import flags, logging
from etils import epath

from recog import cli, data, experiments, parallel, plugins, robustness
from recog.errors import UserError
from recog.train import checkpoint, evaluation, report, workdir_files
from recog.train.metrics import MetricWriter
from recog.train.step import build_steps

_WORKDIR = cli.workdir_flag()
_ONCE = flags.DEFINE_bool(
    "once", False, "Evaluate one checkpoint (--step, or the latest) and exit."
)
_STEP = cli.step_flag()
_POLL_SECONDS = flags.DEFINE_float("poll_seconds", 5.0, "How often to look for new checkpoints.")
_TIMEOUT_SECONDS = flags.DEFINE_float(
    "timeout_seconds", 3600.0, "Stop following after this long without a new checkpoint."
)
_PLUGINS = cli.plugins_flag()
_ROBUSTNESS = flags.DEFINE_bool(
    "robustness",
    False,
    "Measure accuracy under occlusion and rotation for one checkpoint (--step, or the latest); "
    "writes eval/robustness.{json,md,png}.",
)
_BASELINE = flags.DEFINE_string(
    "baseline",
    None,
    "With --robustness: a work directory measured with --robustness before, shown beside.",
)


def evaluated_steps(metrics_path: epath.Path, split: str) -> set[int]:
    if not metrics_path.is_file():
        return set()
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    return {row["step"] for row in rows if row.get("split") == split}


def wait_for_config(workdir: epath.Path, timeout: float, poll: float):
    """The run's config; a follower started before training waits for it to appear."""
    deadline = time.monotonic() + timeout
    while not (workdir / workdir_files.CONFIG_FILE).is_file() and time.monotonic() < deadline:
        time.sleep(poll)
    return workdir_files.read_config(workdir)


def main(argv: list[str]) -> None:
    del argv
    if not _WORKDIR.value:
        raise UserError("--workdir is required: the work directory of a training run.")
    workdir = workdir_files.workdir_path(_WORKDIR.value)
    if _BASELINE.value and not _ROBUSTNESS.value:
        raise UserError("--baseline compares robustness reports; it needs --robustness.")
    baseline = None
    if _BASELINE.value:
        baseline = robustness.read_baseline(workdir_files.workdir_path(_BASELINE.value))
    if _ONCE.value or _ROBUSTNESS.value:
        config = workdir_files.read_config(workdir)
    else:
        config = wait_for_config(workdir, _TIMEOUT_SECONDS.value, _POLL_SECONDS.value)
    plugins.load_all(list(config.get("plugins", [])) + list(_PLUGINS.value))
    if cli.config_overrides:
        with config.unlocked():
            experiments.apply_overrides(config, cli.config_overrides)

    mesh = parallel.make_mesh()
    logging.info("Evaluating %s on %d device(s)", workdir, mesh.size)
    parallel.check_batch_size("config.eval_batch_size", config.eval_batch_size, mesh)
    source = data.make_source(config.data)
    steps = build_steps(config, source.num_classes, data.image_channels(source), mesh)
    sharding = parallel.batch_sharding(mesh)
    split = config.data.eval_split
    if _ROBUSTNESS.value:
        results = robustness.run(workdir, config, source, steps, sharding, _STEP.value, baseline)
        logging.info("Robustness report: %s", workdir / "eval" / "robustness.md")
        print(json.dumps(results), flush=True)
        return
    metrics_path = workdir / "eval" / "metrics.jsonl"
    writer = MetricWriter(metrics_path, workdir / "eval")
    done = evaluated_steps(metrics_path, split)

    def eval_batches():
        return data.configured_eval_batches(source, config, sharding)

    checkpoints = checkpoint.manager(workdir, for_reading=True)

    def evaluate_step(step: int) -> None:
        state = checkpoint.restore(
            checkpoints, step, steps.abstract_state, workdir, weights_only=True
        )
        results = evaluation.evaluate_weights(steps, state, eval_batches, source.class_names)
        results = {"split": split, **results}
        writer.write(step, results)
        logging.info("step %d | %s", step, evaluation.scalars(results))
        if step >= max(done, default=step):  # the report shows the newest step
            logging.info("Report: %s", report.write_report(workdir, step, results))
        print(json.dumps({"step": step, "split": split, **evaluation.scalars(results)}), flush=True)
        done.add(step)

    last_news = time.monotonic()
    while True:
        checkpoints.reload()  # see what training saved since the last look
        if _ONCE.value:
            chosen = checkpoint.choose_step(checkpoints, workdir, _STEP.value)
            why = checkpoint.why_chosen(checkpoints, config, chosen, _STEP.value)
            logging.info("Evaluating step %d: %s", chosen, why)
            evaluate_step(chosen)
            break
        new = sorted(set(checkpoints.all_steps()) - done)
        for step in new:
            try:
                evaluate_step(step)
            except (FileNotFoundError, UserError) as e:
                logging.warning("Checkpoint %d could not be evaluated (%s); skipping it.", step, e)
                done.add(step)
        if new:
            last_news = time.monotonic()
        if config.num_steps in done:
            logging.info("Training reached its final step %d; stopping.", config.num_steps)
            break
        if time.monotonic() - last_news > _TIMEOUT_SECONDS.value:
            logging.warning("No new checkpoint for %.0f s; stopping.", _TIMEOUT_SECONDS.value)
            break
        time.sleep(_POLL_SECONDS.value)
    writer.close()


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
