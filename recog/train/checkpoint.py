"""Orbax checkpoints of the train state in `WORKDIR/checkpoints`, preemption, and the one rule by
which every binary picks a checkpoint (choose_step)."""

import logging as std_logging
import os
import signal

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint._src.metadata import array_metadata_store  # Orbax 0.12 has no public name

from recog.errors import UserError
from recog.train.workdir_files import checkpoint_dir, workdir_path

# Orbax saves a replicated array in slices, one from each replica, and every slice shape compiles
# a program of its own: for a ResNet-50 on 8 devices about 200 programs, 25 s of a CPU before the
# first save completes. An array under a MiB a replica is copied whole from one replica instead.
# The registration is Orbax's process-wide one (recog's managers use both StandardSave and
# PyTreeRestore, which share it); it changes how arrays are copied, not what is written. Orbax
# warns of every override, on every command: that one warning is dropped.
REPLICA_PARALLEL_MIN_BYTES = 1 << 20
_absl_logger = std_logging.getLogger("absl")
_level = _absl_logger.level
_absl_logger.setLevel(std_logging.ERROR)
try:
    ocp.type_handlers.register_type_handler(
        jax.Array,
        ocp.type_handlers.ArrayHandler(
            min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_BYTES,
            array_metadata_store=array_metadata_store.Store(),
        ),
        override=True,
    )
finally:
    _absl_logger.setLevel(_level)


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or "error" in metric or "ece" in metric


def manager(
    workdir: str | os.PathLike,
    keep: int = 3,
    best_metric: str | None = None,
    for_reading: bool = False,
) -> ocp.CheckpointManager:
    """Async saves that keep the newest `keep` checkpoints, plus the best by `best_metric` (an
    eval metric saved with the checkpoint). A checkpoint is listed only once it is complete:
    Orbax writes into a temporary folder and renames it at the end.

    A manager `for_reading` never saves, so it never deletes either.
    """
    if for_reading:
        options = ocp.CheckpointManagerOptions(create=False)
    else:
        policies = [ocp.checkpoint_managers.LatestN(keep)]
        best_fn = None
        if best_metric:
            best_fn = lambda metrics: metrics[best_metric]
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=best_fn,
                    reverse=lower_is_better(best_metric),
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        # best_fn makes Orbax write each checkpoint's metrics to disk, so the best one is still
        # known (and kept) after a restart; the policies decide what is kept.
        options = ocp.CheckpointManagerOptions(
            best_fn=best_fn,
            best_mode="min" if best_metric and lower_is_better(best_metric) else "max",
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            cleanup_tmp_directories=True,
        )
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(mngr, step: int, state, metrics: dict | None = None, force: bool = False) -> None:
    """Starts an async save; raises here any error of an earlier background save."""
    mngr.check_for_errors()
    mngr.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=force)


def best_step(mngr: ocp.CheckpointManager, metric: str) -> int | None:
    """The kept checkpoint with the best `metric`, or None if none was saved with metrics."""
    scored = [(mngr.metrics(step) or {}, step) for step in mngr.all_steps()]
    scored = [(m[metric], step) for m, step in scored if metric in m]
    if not scored:
        return None
    pick = min if lower_is_better(metric) else max
    return pick(scored)[1]


WEIGHTS = ("params", "ema_params", "model_state")


def restore(
    mngr: ocp.CheckpointManager,
    step: int,
    abstract_state,
    workdir: str | os.PathLike,
    weights_only: bool = False,
):
    """Restores `step` onto the shardings of `abstract_state` (any device count). With
    `weights_only`, only the weights and BatchNorm statistics are read (evaluating and
    predicting need no optimizer state, which is as large as the weights or larger). Orbax fixes
    a manager's way of restoring at its first restore: use one manager per way."""
    try:
        if weights_only:
            wanted = {key: abstract_state[key] for key in WEIGHTS if key in abstract_state}
            args = ocp.args.PyTreeRestore(
                item=wanted,
                restore_args=ocp.checkpoint_utils.construct_restore_args(wanted),
                partial_restore=True,
            )
            return mngr.restore(step, args=args)
        return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"the checkpoint at step {step} in {workdir} cannot be restored for this config "
            f"({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            "if it belongs to another model or optimizer, use another --workdir."
        ) from None


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, workdir: str | os.PathLike):
    """The newest checkpoint that restores, or None when there is none.

    An unreadable checkpoint (truncated files, say, from a crash or a full disk) is moved aside
    to WORKDIR/checkpoints_unreadable/ with a warning, never deleted, and the one before it is
    tried. When none restores, the error is about the newest: usually a config that no longer
    fits the checkpoints.
    """
    steps = sorted(mngr.all_steps(), reverse=True)
    errors = []
    for step in steps:
        try:
            state = restore(mngr, step, abstract_state, workdir)
        except UserError as e:
            errors.append((step, e))
            continue
        for bad_step, error in errors:
            logging.warning("Skipped the unreadable checkpoint %d: %s", bad_step, error)
            if jax.process_index() == 0:
                aside = workdir_path(workdir) / "checkpoints_unreadable"
                aside.mkdir(exist_ok=True)
                (checkpoint_dir(workdir) / str(bad_step)).rename(aside / str(bad_step))
        if errors:
            mngr.reload()
        return state
    if errors:
        raise errors[0][1]
    return None


class PreemptionWatch:
    """Tells the loop when to save and stop: after SIGTERM (one process), or at JAX's preemption
    sync point (several processes, where every process must stop at the same step)."""

    def __init__(self):
        self.signalled = False
        self._previous = None
        if jax.process_count() == 1:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        del signum, frame
        self.signalled = True

    def reached(self, step: int, mngr: ocp.CheckpointManager) -> bool:
        if jax.process_count() == 1:
            return self.signalled
        return mngr.reached_preemption(step)

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def choose_step(mngr, workdir, step: int | None) -> int:
    """The one rule by which every binary (eval --once and --robustness, predict, export, and
    init_from from a work directory) picks a checkpoint: `step` when the work directory has it,
    else the latest. Not the best by config.best_metric (kept too, for --step): a checkpoint
    chosen by its score on the validation split and then measured on that split reads
    optimistic. cats_finetune:cpu at 5 epochs (2026-12-07): the best by accuracy, step 186,
    0.990 upright and 0.949 turned 120 degrees; the latest, step 312, 0.989 and 0.957."""
    available = sorted(mngr.all_steps())
    if not available:
        raise UserError(f"{workdir} holds no checkpoint yet; train it with recog.main first.")
    if step is None:
        return available[-1]
    if step not in available:
        raise UserError(
            f"{workdir} has no checkpoint at step {step}; its checkpoints are at steps "
            f"{', '.join(map(str, available))}."
        )
    return step


def why_chosen(mngr, config: ml_collections.ConfigDict, chosen: int, asked: int | None) -> str:
    """What choose_step's choice is, for the logs, and where the best by config.best_metric is."""
    if asked is not None:
        return "as asked"
    best = best_step(mngr, config.best_metric)
    if best is None:
        return "the latest; no checkpoint was saved with eval metrics"
    value = f"{config.best_metric} {mngr.metrics(best)[config.best_metric]:.4g}"
    if best == chosen:
        return f"the latest, also the best by {value}"
    return f"the latest; the best by {value} is step {best}"
