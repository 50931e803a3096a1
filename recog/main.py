"""Trains a model on a dataset as an experiment config says, resuming from the work directory.

python -m recog.main --experiment=digits_cnn --workdir=workdirs/digits
python -m recog.main --experiment=digits_cnn --config.optimizer.lr=0.05 --config.num_steps=200
python -m recog.main --list
"""

import re
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import flags, logging

from recog import augment, cli, data, experiments, parallel, plugins
from recog.augment.batch import parse_batch
from recog.data import catalog
from recog.errors import TrainingDiverged, UserError
from recog.models import info
from recog.registry import ALL, MODELS
from recog.train import checkpoint, evaluation, init_from, workdir_files
from recog.train.metrics import MetricWriter, Progress
from recog.train.optim import make_optimizer, training_summary
from recog.train.step import build_steps, check_accumulation

_EXPERIMENT = flags.DEFINE_string("experiment", None, "NAME[:variant] of experiments/NAME.py.")
_WORKDIR = cli.workdir_flag("Where checkpoints and metrics go.")
_PLUGINS = cli.plugins_flag("Plugin modules or .py files to load.")
_LIST = flags.DEFINE_bool("list", False, "List models, datasets, augmentations, experiments.")


def summary(obj) -> str:
    """The first sentence of obj's docstring, for --list."""
    paragraph = " ".join((obj.__doc__ or "").strip().split("\n\n")[0].split())
    return re.split(r"(?<=\.) (?=[A-Z])", paragraph, maxsplit=1)[0]  # not at "et al. 2015"


def print_listing() -> None:
    model_figures = {name: info.listing_figures(name) for name in MODELS}  # any log line first
    for registry in ALL:
        if registry is MODELS:
            print(f"models:{'params':>28s} {'GFLOPs':>8s}  (1000 classes; one 224x224 RGB image)")
        else:
            print(f"{registry.kind}s:")
        for name in registry:
            figures = ""
            if registry is MODELS:
                params, flops = model_figures[name]
                figures = f"{params:>8s} {flops:>8s}  "
            print(f"  {name:24s} {figures}{summary(registry.get(name))}")
    print("experiments:")
    for name in experiments.available():
        print(f"  {name:24s} {experiments.describe(name)}")
    for key, source in plugins.loaded().items():
        print(f"plugin {key} (from {source})")


def check_before_writing(config: ml_collections.ConfigDict, workdir: str, mesh) -> None:
    """Every check that can refuse the run and needs no data, before anything is written anywhere
    (the data set's preparation included)."""
    parallel.check_batch_size("config.batch_size", config.batch_size, mesh)
    parallel.check_batch_size("config.eval_batch_size", config.eval_batch_size, mesh)
    check_accumulation(config, mesh)
    MODELS.get(config.model.name)
    catalog.factory(config.data.name)
    make_optimizer(config)
    for pipeline in (config.data.train_pipeline, config.data.eval_pipeline):
        augment.parse(pipeline)
    parse_batch(config.data.batch_pipeline)
    workdir_files.check_workdir(workdir, config)
    init_from.check(config, workdir)


def train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains to config.num_steps, resuming from workdir; returns the last eval metrics."""
    start_time = time.perf_counter()
    mesh = parallel.make_mesh()
    check_before_writing(config, workdir, mesh)
    source = data.make_source(config.data)
    logging.info(experiments.resolve_epochs(config, source.num_examples(config.data.train_split)))
    in_channels = data.image_channels(source)
    steps = build_steps(config, source.num_classes, in_channels, mesh)

    initial_weights = None
    if config.init_from and not workdir_files.has_checkpoints(workdir):
        # Read before the checkpoint manager exists: a source that does not fit is refused with
        # nothing written to the work directory.
        initial_weights = init_from.load_weights(
            config, steps.abstract_state, source.class_names, in_channels
        )
    checkpoints = checkpoint.manager(workdir, config.keep_checkpoints, config.best_metric)
    state = checkpoint.restore_latest(checkpoints, steps.abstract_state, workdir)
    if state is None and initial_weights is not None:
        state = steps.start(*initial_weights)
    elif state is None:
        state = steps.init()
    else:
        logging.info("Resuming from the checkpoint at step %d in %s", state["step"], workdir)
    workdir_files.record_run(workdir, config, data.describe(source))
    first_step = int(state["step"])

    batch_sharding = parallel.batch_sharding(mesh)
    train_batches = data.configured_train_batches(source, config, start_step=first_step)

    def run_eval() -> dict:
        def eval_batches():
            return data.configured_eval_batches(source, config, batch_sharding)

        return evaluation.evaluate_weights(steps, state, eval_batches, source.class_names)

    workdir_path = workdir_files.workdir_path(workdir)
    writer = MetricWriter(
        workdir_path / "metrics.jsonl", workdir_path / "tensorboard", first_step=first_step
    )
    progress = Progress(first_step, config.num_steps, config.batch_size)
    preemption = checkpoint.PreemptionWatch()
    for line in training_summary(config, steps.abstract_state["params"]):
        logging.info(line)
    logging.info(
        "Training %s on %s from step %d to %d on %d device(s), global batch %d",
        config.model.name,
        config.data.name,
        first_step,
        config.num_steps,
        mesh.size,
        config.batch_size,
    )
    pending = []  # (step, device metrics) since the last fetch: fetched together, no host syncs
    last_saved = first_step
    eval_metrics = {}
    try:
        for step in range(first_step + 1, config.num_steps + 1):
            batch = parallel.to_global(next(train_batches), batch_sharding)
            state, metrics = steps.train(state, batch)
            pending.append((step, metrics))
            is_last = step == config.num_steps
            preempted = preemption.reached(step, checkpoints)
            log_now = step % config.log_every == 0 or is_last
            eval_now = step % config.eval_every == 0 or is_last
            save_now = step % config.checkpoint_every == 0 or is_last or preempted
            if not (log_now or eval_now or save_now):
                continue
            fetched = jax.device_get(pending)  # one transfer for all steps since the last fetch
            pending = []
            for bad_step, m in fetched:
                if not np.isfinite(m["loss"]):
                    raise TrainingDiverged(
                        f"training diverged: the loss was {m['loss']} at step {bad_step}. "
                        f"The last checkpoint (step {last_saved}) in {workdir} is kept and nothing "
                        "after it was saved; lower config.optimizer.lr or set "
                        "config.optimizer.grad_clip_norm, then rerun to resume from it."
                    )
            if log_now:
                summary = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[0][1]}
                summary["learning_rate"] = float(steps.schedule(step - 1))
                summary.update(progress.update(step, summary))
                writer.write(step, {f"train/{k}": v for k, v in summary.items()})
            step_metrics = None
            if eval_now:
                eval_metrics = run_eval()
                step_metrics = evaluation.scalars(eval_metrics)
                logging.info("step %d | eval on %s: %s", step, config.data.eval_split, step_metrics)
                writer.write(step, {f"eval/{k}": v for k, v in step_metrics.items()})
            if save_now:
                checkpoint.save(checkpoints, step, state, step_metrics, force=is_last or preempted)
                last_saved = step
            if preempted:
                logging.warning("Preempted: saved step %d; rerun the command to resume.", step)
                break
    finally:
        checkpoints.wait_until_finished()
        checkpoints.close()
        writer.close()
        preemption.close()
    if first_step == config.num_steps:
        logging.info("%s already holds the final step %d.", workdir, config.num_steps)
    elif last_saved == config.num_steps:
        logging.info(
            "Done: step %d, eval accuracy %.4f, %.0f s in all.",
            last_saved,
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
        raise UserError(
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
