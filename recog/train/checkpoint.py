"""Orbax checkpoints of the train state in `WORKDIR/checkpoints`, and the work directory's guard."""

import os
from pathlib import Path

import jax
import ml_collections
import orbax.checkpoint as ocp

from recog import experiments
from recog.errors import UserError

CONFIG_FILE = "config.json"


def checkpoint_dir(workdir: str | Path) -> Path:
    return Path(workdir).resolve() / "checkpoints"


def manager(workdir: str | Path, keep: int = 3, for_reading: bool = False) -> ocp.CheckpointManager:
    """Async saves; keeps the newest `keep` checkpoints; only complete checkpoints are listed.

    A manager `for_reading` never saves, so it never deletes either.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if for_reading else keep, create=not for_reading
    )
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, force: bool = False) -> None:
    mngr.save(step, args=ocp.args.StandardSave(state), force=force)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, workdir: str | Path):
    """Restores `step` onto the shardings of `abstract_state` (any device count)."""
    try:
        return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"the checkpoint at step {step} in {workdir} does not fit this config's model and "
            f"optimizer ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            "use another --workdir."
        ) from None


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{workdir} is not a recog work directory: it has no {CONFIG_FILE}.")
    return experiments.from_json(path.read_text())


def _identity(config: ml_collections.ConfigDict) -> dict[str, str]:
    return {
        "experiment": Path(config.experiment.partition(":")[0]).stem,
        "model": config.model.name,
        "dataset": config.data.name,
    }


def claim_workdir(workdir: str | Path, config: ml_collections.ConfigDict) -> None:
    """Refuses a work directory whose checkpoints belong to another experiment, model or dataset;
    otherwise writes the resolved config there (atomically, on process 0)."""
    workdir = Path(workdir)
    has_checkpoints = checkpoint_dir(workdir).is_dir() and any(checkpoint_dir(workdir).iterdir())
    config_path = workdir / CONFIG_FILE
    if has_checkpoints and config_path.is_file():
        previous = _identity(read_config(workdir))
        current = _identity(config)
        if previous != current:
            was = ", ".join(f"{k} {v!r}" for k, v in previous.items())
            now = ", ".join(f"{k} {v!r}" for k, v in current.items())
            raise UserError(
                f"work directory {workdir} holds checkpoints of {was}, but this run is {now}; "
                "choose another --workdir (nothing in it was changed)."
            )
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = config_path.with_suffix(".json.tmp")
        tmp.write_text(experiments.to_json(config))
        os.replace(tmp, config_path)
