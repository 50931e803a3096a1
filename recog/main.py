"""Trains a model on a dataset as an experiment config says, resuming from the work directory.

python -m recog.main --experiment=digits_cnn --workdir=workdirs/digits
python -m recog.main --experiment=digits_cnn --config.optimizer.lr=0.05 --config.num_steps=200
python -m recog.main --list
"""

import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import flags, logging

from recog import cli, data, experiments, parallel, plugins
from recog.registry import ALL
from recog.train import checkpoint
from recog.train.metrics import MetricWriter, Progress
from recog.train.step import build_steps, evaluate

_EXPERIMENT = flags.DEFINE_string("experiment", None, "NAME[:variant] of experiments/NAME.py.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.")
_PLUGINS = flags.DEFINE_list("plugins", [], "Plugin modules or .py files to load.")
_LIST = flags.DEFINE_bool("list", False, "List models, datasets, augmentations, experiments.")


def first_doc_line(obj) -> str:
    return ((obj.__doc__ or "").strip().split("\n") or [""])[0]


def print_listing() -> None:
    for registry in ALL:
        print(f"{registry.kind}s:")
        for name in registry:
            print(f"  {name:24s} {first_doc_line(registry.get(name))}")
    print("experiments:")
    for name in experiments.available():
        print(f"  {name:24s} {experiments.describe(name)}")
    for key, source in plugins.loaded().items():
        print(f"plugin {key} (from {source})")


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains to config.num_steps, resuming from workdir; returns the final eval metrics."""
    start_time = time.perf_counter()
    mesh = parallel.make_mesh()
    parallel.check_batch_size("config.batch_size", config.batch_size, mesh)
    parallel.check_batch_size("config.eval_batch_size", config.eval_batch_size, mesh)
    source = data.make_source(config.data)
    steps = build_steps(config, source.num_classes, data.image_channels(source), mesh)
    checkpoint.claim_workdir(workdir, config)

    checkpoints = checkpoint.manager(workdir, keep=config.keep_checkpoints)
    latest = checkpoints.latest_step()
    if latest is None:
        state = steps.init()
    else:
        logging.info("Resuming from the checkpoint at step %d in %s", latest, workdir)
        state = checkpoint.restore(checkpoints, latest, steps.abstract_state, workdir)
    first_step = int(state["step"])

    batch_sharding = parallel.batch_sharding(mesh)
    train_batches = data.train_batches(
        source,
        config.data.train_split,
        global_batch_size=config.batch_size,
        pipeline=config.data.train_pipeline,
        seed=config.seed,
        start_step=first_step,
        cache=config.data.cache,
    )

    def run_eval() -> dict[str, float]:
        batches = data.eval_batches(
            source,
            config.data.eval_split,
            global_batch_size=config.eval_batch_size,
            pipeline=config.data.eval_pipeline,
        )
        return evaluate(steps, state, (parallel.to_global(b, batch_sharding) for b in batches))

    writer = MetricWriter(Path(workdir) / "metrics.jsonl", Path(workdir) / "tensorboard")
    progress = Progress(first_step, config.num_steps, config.batch_size)
    logging.info(
        "Training %s on %s from step %d to %d on %d device(s), global batch %d",
        config.model.name,
        config.data.name,
        first_step,
        config.num_steps,
        mesh.size,
        config.batch_size,
    )
    pending = []  # device-side metrics since the last log, fetched together to avoid host syncs
    eval_metrics = {}
    for step in range(first_step + 1, config.num_steps + 1):
        batch = parallel.to_global(next(train_batches), batch_sharding)
        state, metrics = steps.train(state, batch)
        pending.append(metrics)
        is_last = step == config.num_steps
        if step % config.log_every == 0 or is_last:
            fetched = jax.device_get(pending)
            summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
            summary["learning_rate"] = float(steps.schedule(step - 1))
            summary.update(progress.update(step, summary))
            writer.write(step, {f"train/{k}": v for k, v in summary.items()})
            pending = []
        if step % config.checkpoint_every == 0 or is_last:
            checkpoint.save(checkpoints, step, state, force=is_last)
        if step % config.eval_every == 0 or is_last:
            eval_metrics = run_eval()
            logging.info("step %d | eval on %s: %s", step, config.data.eval_split, eval_metrics)
            writer.write(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
    checkpoints.wait_until_finished()
    checkpoints.close()
    writer.close()
    if not eval_metrics:
        logging.info("%s already holds the final step %d.", workdir, config.num_steps)
    else:
        logging.info(
            "Done: step %d, eval accuracy %.4f, %.0f s in all.",
            config.num_steps,
            eval_metrics["accuracy"],
            time.perf_counter() - start_time,
        )
    return eval_metrics


def main(argv: list[str]) -> None:
    del argv
    plugins.load_all(_PLUGINS.value)
    if _LIST.value:
        print_listing()
        return
    if not _EXPERIMENT.value:
        raise cli.UserError(
            f"--experiment is required; experiments: {', '.join(experiments.available())}."
        )
    config = experiments.load(_EXPERIMENT.value, cli.config_overrides)
    with config.unlocked():
        config.plugins = list(_PLUGINS.value)
    workdir = _WORKDIR.value or str(Path("workdirs") / _EXPERIMENT.value.replace(":", "_"))
    train(config, workdir)


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
