"""A work directory's own files, apart from the Orbax checkpoints in WORKDIR/checkpoints: the
run's resolved config (config.json) and what it trained on (dataset.json), written atomically,
and the guard that refuses a work directory holding another run's checkpoints."""

import json
import os

import jax
import ml_collections
from etils import epath

from recog import experiments
from recog.errors import UserError

CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"


def workdir_path(workdir: str | os.PathLike) -> epath.Path:
    """The work directory as a path that may also be remote (gs://bucket/..., for TPU pods)."""
    workdir = os.fspath(workdir)
    return epath.Path(workdir if "://" in workdir else os.path.abspath(workdir))


def checkpoint_dir(workdir: str | os.PathLike) -> epath.Path:
    return workdir_path(workdir) / "checkpoints"


def has_checkpoints(workdir: str | os.PathLike) -> bool:
    checkpoints = checkpoint_dir(workdir)
    return checkpoints.is_dir() and any(checkpoints.iterdir())


def read_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    path = workdir_path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{workdir} is not a recog work directory: it has no {CONFIG_FILE}.")
    return experiments.from_json(path.read_text())


def _identity(config: ml_collections.ConfigDict) -> dict[str, str]:
    return {
        "experiment": os.path.splitext(os.path.basename(config.experiment.partition(":")[0]))[0],
        "model": config.model.name,
        "dataset": config.data.name,
    }


def check_workdir(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> None:
    """Refuses a work directory whose checkpoints belong to another experiment, model or dataset,
    before anything is written there."""
    workdir = workdir_path(workdir)
    if has_checkpoints(workdir) and (workdir / CONFIG_FILE).is_file():
        previous = _identity(read_config(workdir))
        current = _identity(config)
        if previous != current:
            was = ", ".join(f"{k} {v!r}" for k, v in previous.items())
            now = ", ".join(f"{k} {v!r}" for k, v in current.items())
            raise UserError(
                f"work directory {workdir} holds checkpoints of {was}, but this run is {now}; "
                "choose another --workdir (nothing in it was changed)."
            )


def record_run(
    workdir: str | os.PathLike, config: ml_collections.ConfigDict, dataset: dict
) -> None:
    """Writes the resolved config and `dataset` (class names, image shape) into the work
    directory, atomically, on process 0: once the run's state is restored or initialised, so that
    a run the checkpoints there refuse leaves them as they were."""
    workdir = workdir_path(workdir)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        write_atomically(workdir / CONFIG_FILE, experiments.to_json(config))
        write_atomically(workdir / DATASET_FILE, json.dumps(dataset, indent=2))


def write_atomically(path: epath.Path, text: str) -> None:
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_dataset_info(workdir: str | os.PathLike) -> dict:
    """What predict needs to know of the training data: class names and image shape."""
    path = workdir_path(workdir) / DATASET_FILE
    if not path.is_file():
        raise UserError(f"{workdir} has no {DATASET_FILE}; was it written by recog.main?")
    return json.loads(path.read_text())
