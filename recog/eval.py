"""Evaluates the checkpoints of a training work directory; needs no flags but --workdir.

    python -m recog.eval --workdir=workdirs/digits_cnn --once   # the latest checkpoint, now
    python -m recog.eval --workdir=workdirs/digits_cnn          # each new checkpoint, once

Without --once it follows the training run: every checkpoint is evaluated exactly once (steps
already in eval/metrics.jsonl are skipped, so a restarted follower picks up where it stopped), and
it exits after the final step (config.num_steps), or when no new checkpoint has appeared for
--timeout_seconds. Results: one JSON object per line in WORKDIR/eval/metrics.jsonl with step,
accuracy, loss, num_examples and split; the same scalars go to TensorBoard in WORKDIR/eval.
"""

import json
import time
from pathlib import Path

from absl import flags, logging

from recog import cli, data, experiments, parallel, plugins
from recog.errors import UserError
from recog.train import checkpoint
from recog.train.metrics import MetricWriter
from recog.train.step import build_steps, evaluate

_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's work directory.")
_ONCE = flags.DEFINE_bool("once", False, "Evaluate the latest checkpoint and exit.")
_POLL_SECONDS = flags.DEFINE_float("poll_seconds", 5.0, "How often to look for new checkpoints.")
_TIMEOUT_SECONDS = flags.DEFINE_float(
    "timeout_seconds", 3600.0, "Stop following after this long without a new checkpoint."
)
_PLUGINS = flags.DEFINE_list("plugins", [], "Plugins to load besides those the run used.")


def evaluated_steps(metrics_path: Path) -> set[int]:
    if not metrics_path.is_file():
        return set()
    return {json.loads(line)["step"] for line in metrics_path.read_text().splitlines() if line}


def main(argv: list[str]) -> None:
    del argv
    if not _WORKDIR.value:
        raise UserError("--workdir is required: the work directory of a training run.")
    workdir = Path(_WORKDIR.value)
    config = checkpoint.read_config(workdir)
    plugins.load_all(list(config.get("plugins", [])) + list(_PLUGINS.value))
    if cli.config_overrides:
        with config.unlocked():
            experiments.apply_overrides(config, cli.config_overrides)

    mesh = parallel.make_mesh()
    parallel.check_batch_size("config.eval_batch_size", config.eval_batch_size, mesh)
    source = data.make_source(config.data)
    steps = build_steps(config, source.num_classes, data.image_channels(source), mesh)
    sharding = parallel.batch_sharding(mesh)
    metrics_path = workdir / "eval" / "metrics.jsonl"
    writer = MetricWriter(metrics_path, workdir / "eval")
    done = evaluated_steps(metrics_path)

    def evaluate_step(step: int) -> None:
        checkpoints = checkpoint.manager(workdir, for_reading=True)
        state = checkpoint.restore(checkpoints, step, steps.abstract_state, workdir)
        batches = data.eval_batches(
            source,
            config.data.eval_split,
            global_batch_size=config.eval_batch_size,
            pipeline=config.data.eval_pipeline,
        )
        results = evaluate(steps, state, (parallel.to_global(b, sharding) for b in batches))
        results["split"] = config.data.eval_split
        writer.write(step, results)
        logging.info("step %d | %s", step, results)
        print(json.dumps({"step": step, **results}), flush=True)
        done.add(step)

    last_new_checkpoint = time.monotonic()
    while True:
        available = checkpoint.manager(workdir, for_reading=True).all_steps()
        if _ONCE.value:
            if not available:
                raise UserError(f"{workdir} holds no checkpoint yet.")
            evaluate_step(max(available))
            break
        new = sorted(set(available) - done)
        for step in new:
            try:
                evaluate_step(step)
            except FileNotFoundError:
                logging.warning("Checkpoint %d was deleted before it could be evaluated.", step)
        if new:
            last_new_checkpoint = time.monotonic()
        if config.num_steps in done:
            logging.info("Training reached its final step %d; stopping.", config.num_steps)
            break
        if time.monotonic() - last_new_checkpoint > _TIMEOUT_SECONDS.value:
            logging.warning("No new checkpoint for %.0f s; stopping.", _TIMEOUT_SECONDS.value)
            break
        time.sleep(_POLL_SECONDS.value)
    writer.close()


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
