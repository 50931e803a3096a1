"""Experiments: `--experiment=NAME[:variant]` -> `experiments/NAME.py`'s `get_config(variant)`.

The repository's experiments/ folder is installed as the package `recog_experiments`
(pyproject.toml), found through the import system like the plugins/ folder: the checkout's folder
in an editable install, the installed copy otherwise.

Overrides use the dotted keys of the resulting ConfigDict: `--config.optimizer.lr=0.05`.
A key that does not exist, or a value of the wrong type, is an error that names the key.
"""

import ast
import difflib
import importlib.util
import json
from collections.abc import Iterable
from pathlib import Path

import ml_collections

from recog.errors import UserError, unknown_name_message
from recog.plugins import package_folder

EXPERIMENTS_PACKAGE = "recog_experiments"  # the repository's experiments/ folder
# Every optional key recog reads, with its default: filled into every config (an experiment's and
# a work directory's config.json) where it is missing, so that --config.KEY sets it anywhere and
# the code reads it without a default of its own. Counted in epochs, `epochs`,
# `schedule.warmup_epochs` and `eval_every_epochs` become num_steps, schedule.warmup_steps and
# eval_every when the run starts (`resolve_epochs`), wherever those are 0; checkpoint_every 0 is
# every evaluation.
COMMON_DEFAULTS = {
    "init_from": "",
    "freeze": "",
    "lr_factors": (),
    "frozen_batch_stats": False,
    "eval_flip": False,
    "num_steps": 0,
    "epochs": 0.0,
    "eval_every": 0,
    "eval_every_epochs": 0.0,
    "checkpoint_every": 0,
    "optimizer.weight_decay": 0.0,
    "optimizer.grad_clip_norm": 0.0,
    "schedule.name": "cosine",
    "schedule.warmup_steps": 0,
    "schedule.warmup_epochs": 0.0,
    "data.shuffle_bytes": 1 << 30,  # recog.data.pipeline.SHUFFLE_BYTES: 1 GiB of stored examples
}
# Keys recog no longer reads, with the value that meant "off": a config (an experiment, or a work
# directory's config.json) that sets one otherwise is refused rather than run without it.
REMOVED_KEYS = {
    "orientation_weight": (0.0, "the orientation head and its training"),
    "eval_rotations": (1, "quarter-turn test-time views"),
    "eval_tilt_degrees": (0.0, "tilted test-time views"),
}


def available() -> list[str]:
    folder = package_folder(EXPERIMENTS_PACKAGE)
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def _experiment_path(name: str) -> Path:
    if name.endswith(".py") or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise UserError(f"experiment file {name!r} does not exist.")
        return path
    path = package_folder(EXPERIMENTS_PACKAGE) / f"{name}.py"
    if not path.is_file():
        raise UserError(unknown_name_message("experiment", name, available()))
    return path


def describe(name: str) -> str:
    """First line of an experiment's docstring, for `--list`."""
    module = _load_module(_experiment_path(name))
    return (module.__doc__ or "").strip().split("\n")[0]


def _load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"recog_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise UserError(f"experiment file {str(path)!r} has no get_config() function.")
    return module


def load(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Resolves `NAME[:variant]` plus `key=value` overrides into a locked ConfigDict.

    The result carries `experiment` (the spec as given) so a work directory says what made it.
    """
    name, _, variant = spec.partition(":")
    module = _load_module(_experiment_path(name))
    try:
        config = module.get_config(variant) if variant else module.get_config()
    except (KeyError, ValueError) as e:
        raise UserError(f"experiment {name!r} rejected variant {variant!r}: {e}") from e
    with config.unlocked():
        config.experiment = spec
    add_defaults(config)
    apply_overrides(config, overrides)
    check_removed_keys(config)
    config.lock()
    return config


def add_defaults(config: ml_collections.ConfigDict) -> None:
    """COMMON_DEFAULTS's keys, where `config` lacks them; a whole number where the default is a
    float becomes a float, so that --config.epochs=2.5 is accepted."""
    with config.unlocked():
        for key, value in COMMON_DEFAULTS.items():
            *parents, leaf = key.split(".")
            node = config
            for part in parents:
                if part not in node:
                    node[part] = ml_collections.ConfigDict()
                node = node[part]
            if leaf not in node:
                node[leaf] = value
            elif isinstance(value, float) and type(node[leaf]) is int:  # epochs = 85: a float
                number = node[leaf]
                del node[leaf]
                node[leaf] = float(number)


EPOCH_KEYS = (  # (steps, the same counted in epochs)
    ("num_steps", "epochs"),
    ("schedule.warmup_steps", "schedule.warmup_epochs"),
    ("eval_every", "eval_every_epochs"),
)


def _parent_and_leaf(config: ml_collections.ConfigDict, key: str):
    *parents, leaf = key.split(".")
    for part in parents:
        config = config[part]
    return config, leaf


def resolve_epochs(config: ml_collections.ConfigDict, train_images: int) -> str:
    """Sets num_steps, schedule.warmup_steps and eval_every from the keys counted in epochs of
    `train_images` (the training split's real size) wherever they are 0, and checkpoint_every
    from eval_every where it is 0; a count of steps that is set wins over one in epochs. Returns
    the log line that says what was resolved."""
    notes = []
    for steps_key, epochs_key in EPOCH_KEYS:
        node, leaf = _parent_and_leaf(config, steps_key)
        epochs_node, epochs_leaf = _parent_and_leaf(config, epochs_key)
        epochs = epochs_node[epochs_leaf]
        if epochs and node[leaf]:
            notes.append(f"config.{epochs_key}={epochs:g} unused, config.{steps_key} is set")
        elif epochs:
            at_least = 0 if steps_key == "schedule.warmup_steps" else 1
            node[leaf] = max(int(epochs * train_images / config.batch_size), at_least)
            notes.append(f"config.{epochs_key}={epochs:g} -> config.{steps_key}={node[leaf]}")
    if not config.checkpoint_every:
        config.checkpoint_every = config.eval_every
    ways = {"num_steps": "config.num_steps or config.epochs"}
    ways["eval_every"] = "config.eval_every or config.eval_every_epochs"
    for key in ("num_steps", "eval_every", "checkpoint_every", "log_every"):
        if config[key] < 1:
            raise UserError(
                f"config.{key} is {config[key]}: set {ways.get(key, f'config.{key}')} so that it "
                "is at least 1."
            )
    where = f"{train_images:,} training images at batch {config.batch_size}"
    return f"{where}: {'; '.join(notes) if notes else 'steps as configured'}."


def check_removed_keys(config: ml_collections.ConfigDict) -> None:
    for key, (off, feature) in REMOVED_KEYS.items():
        if config.get(key, off) != off:
            raise UserError(
                f"config.{key}={config[key]!r}: {feature} were taken out of recog (issue 34); "
                f"remove the key, or use a recog release from before 2026-12-07."
            )


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


def _parse_value(key: str, text: str, current):
    def bad(expected: str) -> UserError:
        return UserError(f"config key {key!r} expects {expected}, got {text!r}.")

    if isinstance(current, bool):
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise bad("true or false")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise bad("an integer") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise bad("a number") from None
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is not None:
            raise bad(f"a Python literal of type {type(current).__name__}") from None
        return text
    if current is not None and not isinstance(value, type(current)):
        if isinstance(current, tuple | list) and isinstance(value, tuple | list):
            return type(current)(value)
        raise bad(f"a value of type {type(current).__name__}")
    return value


def _unknown_key_message(key: str, known: list[str]) -> str:
    group, _, leaf = key.rpartition(".")
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == group]
    if group and not siblings:
        return unknown_name_message("config key", key, known)
    close = difflib.get_close_matches(leaf, siblings, n=3, cutoff=0.6)
    prefix = f"{group}." if group else ""
    hint = f"; did you mean {' or '.join(repr(prefix + c) for c in close)}?" if close else "."
    where = f"under {group!r}" if group else "at the top level"
    return f"unknown config key {key!r}{hint} Keys {where}: {', '.join(sorted(siblings))}."


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
    """Applies `a.b.c=value` strings. Unknown keys and badly typed values raise UserError."""
    known = flat_keys(config)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep:
            raise UserError(f"config override {override!r} needs the form key=value.")
        if key not in known:
            raise UserError(_unknown_key_message(key, known))
        node, leaf = _parent_and_leaf(config, key)
        value = _parse_value(key, text, node[leaf])
        try:
            node[leaf] = value
        except TypeError as e:
            raise UserError(f"config key {key!r} cannot take {text!r}: {e}") from None


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def from_json(text: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(json.loads(text))
    check_removed_keys(config)
    add_defaults(config)
    config.lock()
    return config
