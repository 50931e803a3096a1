"""config.init_from: a new run's weights and BatchNorm statistics from pretrained ones.

    --config.init_from=DIR         a recog work directory: its latest checkpoint (its raw
                                   weights, not EMA), as checkpoint.choose_step picks
    --config.init_from=DIR@STEP    that work directory's checkpoint of step STEP
    --config.init_from=FILE        a PyTorch state dict (.pth, .pt, .bin) or a .safetensors file,
                                   in the layout of the model's converter (recog.torch_weights)
    --config.init_from=MODEL:TAG   named pretrained weights (recog/pretrained.py), such as
                                   efficientnet_lite0:imagenet: a file of a package or a URL

Nothing else is taken: the run starts at step 0 with a fresh optimizer, moving average and RNG
state. Every parameter and BatchNorm statistic of the model must come from the source with its
shape, and every tensor of the source must fill one, except the classifier (the parameters whose
shape follows the class count): where the class count differs, or a work directory's class names
do, it keeps its random initialisation, and the log says so. Anything else that does not fit is
an error that names the tensors and their shapes. It applies only to a run's start: a work
directory that holds checkpoints resumes from them.
"""

import re

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx
from flax.traverse_util import flatten_dict, unflatten_dict

from recog import pretrained
from recog.errors import UserError
from recog.torch_weights import (
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIX,
    TORCH_CONVERTERS,
    SourceTensor,
    is_weights_file,
    read_state_dict,
    to_recog,
)
from recog.train import checkpoint, workdir_files
from recog.train.optim import path_name
from recog.train.step import State, create_model

LISTED = 8  # problems of each kind named in an error, before "and N more"


def check(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Stops before anything is prepared where config.init_from names nothing that exists, or
    named weights that cannot be had (downloading them here, once), for a run that starts."""
    source = config.init_from
    if not source or workdir_files.has_checkpoints(workdir):
        return
    if pretrained.is_name(source):
        weights = pretrained.get(source)
        if weights.model != config.model.name:
            raise UserError(
                f"config.init_from: the weights {source} are for model {weights.model}, but this "
                f"run's model is {config.model.name} (set --config.model.name={weights.model})."
            )
        pretrained.file_path(source)  # installed, or downloaded and checked, before anything else
        if tuple(config.data.mean) != weights.mean or tuple(config.data.std) != weights.std:
            logging.warning(
                "config.data.mean and std are not what %s was trained with (%s, %s); "
                "its features may suffer.",
                source,
                weights.mean,
                weights.std,
            )
        return
    path = re.sub(r"@\d+$", "", source)
    if not epath.Path(path).exists():
        raise UserError(f"config.init_from: {path} does not exist.")


def load_weights(
    config: ml_collections.ConfigDict, abstract: State, class_names: list[str], in_channels: int
) -> tuple[nnx.State, nnx.State]:
    """(params, model_state) from config.init_from (see the module docstring), with the shapes
    and shardings of the abstract train state, for Steps.start."""
    source = config.init_from
    targets = weights_by_path(abstract)
    if pretrained.is_name(source):
        path = pretrained.file_path(source)
        tensors, source_classes = file_tensors(path, config.model.name, targets), None
    elif is_weights_file(source):
        tensors, source_classes = file_tensors(source, config.model.name, targets), None
    else:
        tensors, source_classes = workdir_tensors(source, config.model.name, targets)
    renewed, why = classifier_to_renew(
        config, abstract["params"], tensors, targets, source_classes, class_names, in_channels
    )
    tensors = {path: t for path, t in tensors.items() if path not in renewed}
    check_fit(source, config.model.name, tensors, targets, renewed)
    fresh = fresh_values(config, abstract, len(class_names), in_channels, set(tensors))

    def value(key_path, leaf):
        path = path_name(key_path)
        if path in fresh:
            return fresh[path]
        array = tensors[path].array.astype(leaf.dtype)
        return jax.make_array_from_callback(leaf.shape, leaf.sharding, lambda i: array[i])

    params, model_state = (
        jax.tree_util.tree_map_with_path(value, abstract[part])
        for part in ("params", "model_state")
    )
    param_paths = {path_name(kp) for kp, _ in jax.tree_util.tree_leaves_with_path(params)}
    loaded_params = len(param_paths & set(tensors))
    logging.info(
        "Initialised %s from %s: %d parameter tensors and %d tensors of BatchNorm statistics.",
        config.model.name,
        source,
        loaded_params,
        len(tensors) - loaded_params,
    )
    logging.info(why)
    return params, model_state


def weights_by_path(state: State) -> dict[str, jax.ShapeDtypeStruct]:
    """The parameters and BatchNorm statistics of an (abstract) train state, by path."""
    weights = {}
    for part in ("params", "model_state"):
        for path, variable in nnx.to_flat_state(state[part]):
            if part == "params" or isinstance(variable, nnx.BatchStat):
                weights["/".join(map(str, path))] = variable.get_value()
    return weights


def fresh_values(
    config: ml_collections.ConfigDict,
    abstract: State,
    num_classes: int,
    in_channels: int,
    loaded: set[str],
) -> dict[str, jax.Array]:
    """The initial values, as a run from scratch has them, of every parameter and model state
    (RNG state, a new classifier) that is not `loaded`. jit drops the random draws of the rest,
    which would cost more than reading the weights (seconds for a ResNet on a CPU)."""
    wanted = {
        path_name(kp): leaf.sharding
        for part in ("params", "model_state")
        for kp, leaf in jax.tree_util.tree_leaves_with_path(abstract[part])
        if path_name(kp) not in loaded
    }
    if not wanted:
        return {}

    def init():
        model = create_model(config, num_classes, in_channels, config.seed)
        _, params, model_state = nnx.split(model, nnx.Param, ...)
        return {
            path_name(kp): leaf
            for part in (params, model_state)
            for kp, leaf in jax.tree_util.tree_leaves_with_path(part)
            if path_name(kp) in wanted
        }

    return jax.jit(init, out_shardings=wanted)()


def classifier_paths(
    config: ml_collections.ConfigDict, params: nnx.State, num_classes: int, in_channels: int
) -> set[str]:
    """The parameters whose shape follows the class count."""
    model = nnx.eval_shape(lambda: create_model(config, num_classes + 1, in_channels, config.seed))
    other = nnx.state(model, nnx.Param)
    shapes = {path_name(kp): leaf.shape for kp, leaf in jax.tree_util.tree_leaves_with_path(other)}
    return {
        path_name(kp)
        for kp, leaf in jax.tree_util.tree_leaves_with_path(params)
        if shapes[path_name(kp)] != leaf.shape
    }


def file_tensors(path: str, model: str, targets: dict[str, jax.Array]) -> dict[str, SourceTensor]:
    if model not in TORCH_CONVERTERS:
        raise UserError(
            f"no PyTorch converter is registered for model {model!r} (models with one: "
            f"{', '.join(TORCH_CONVERTERS)}); a model plugin registers one with "
            "recog.TORCH_CONVERTERS."
        )
    shapes = {p: a.shape for p, a in targets.items()}
    return to_recog(read_state_dict(path), TORCH_CONVERTERS.get(model), shapes)


def classifier_to_renew(
    config: ml_collections.ConfigDict,
    params: nnx.State,
    tensors: dict[str, SourceTensor],
    targets: dict[str, jax.ShapeDtypeStruct],
    source_classes: list[str] | None,
    class_names: list[str],
    in_channels: int,
) -> tuple[set[str], str]:
    """The classifier's paths where it is re-initialised (else none), and a log line saying why.
    `source_classes`: a work directory's class names; None for a weights file, which has none."""
    count = len(class_names)
    if source_classes == class_names:
        return set(), "The classifier is loaded too: the source was trained on the same classes."
    fits = all(p in tensors and tensors[p].array.shape == t.shape for p, t in targets.items())
    if source_classes is None and fits:
        return set(), f"The classifier is loaded too: it fits this run's {count} classes."
    classifier = classifier_paths(config, params, count, in_channels)
    if source_classes is not None:
        why = (
            f"the source was trained on {len(source_classes)} classes "
            f"({_listing(source_classes)}), this run has {count} ({_listing(class_names)})"
        )
    elif absent := sorted(classifier - set(tensors)):
        why = f"the file has no {', '.join(absent)}"
    else:
        unfit = [
            tensors[p] for p in sorted(classifier) if tensors[p].array.shape != targets[p].shape
        ]
        if not unfit:
            return set(), f"The classifier is loaded too: it fits this run's {count} classes."
        why = (
            f"the file's {unfit[0].name} is {unfit[0].shape}, for another class count than {count}"
        )
    return classifier, f"The classifier ({', '.join(sorted(classifier))}) is re-initialised: {why}."


def _listing(items: list, limit: int = LISTED) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def workdir_tensors(
    spec: str, model: str, targets: dict[str, jax.Array]
) -> tuple[dict[str, SourceTensor], list[str]]:
    """The raw weights and BatchNorm statistics of a work directory's checkpoint, and the class
    names it was trained on."""
    match = re.fullmatch(r"(.+)@(\d+)", spec)
    workdir, step = (match[1], int(match[2])) if match else (spec, None)
    if epath.Path(workdir).is_file():
        raise UserError(
            f"config.init_from: {workdir} is neither a recog work directory nor a weights file "
            f"({', '.join((*PICKLE_SUFFIXES, SAFETENSORS_SUFFIX))})."
        )
    config = workdir_files.read_config(workdir)
    if config.model.name != model:
        raise UserError(
            f"config.init_from: {workdir} holds weights of {config.model.name}, but this run's "
            f"model is {model}."
        )
    mngr = ocp.CheckpointManager(
        workdir_files.checkpoint_dir(workdir),
        item_handlers=ocp.PyTreeCheckpointHandler(),  # reads any train state, as saved
        options=ocp.CheckpointManagerOptions(create=False),
    )
    step = checkpoint.choose_step(mngr, workdir, step)
    metadata = flatten_dict(mngr.item_metadata(step).tree)
    wanted = {
        key: ocp.RestoreArgs(restore_type=np.ndarray)
        for key in metadata
        if key[0] == "params" or (key[0] == "model_state" and _checkpoint_path(key) in targets)
    }
    restored = mngr.restore(
        step,
        args=ocp.args.PyTreeRestore(
            item=unflatten_dict({key: metadata[key] for key in wanted}),
            restore_args=unflatten_dict(wanted),
            partial_restore=True,
        ),
    )
    mngr.close()
    tensors = {}
    for key, array in flatten_dict(restored).items():
        path = _checkpoint_path(key)
        tensors[path] = SourceTensor(path, array.shape, array)
    logging.info("config.init_from: step %d of %s.", step, workdir)
    return tensors, list(workdir_files.read_dataset_info(workdir)["class_names"])


def _checkpoint_path(key: tuple[str, ...]) -> str:
    """('params', 'blocks', '0', 'conv1', 'kernel', 'value') -> 'blocks/0/conv1/kernel'"""
    return "/".join(key[1:-1] if key[-1] == "value" else key[1:])


def check_fit(
    source: str,
    model: str,
    tensors: dict[str, SourceTensor],
    targets: dict[str, jax.Array],
    new: set[str],
) -> None:
    """Every target but the `new` ones filled, every tensor used, every shape equal."""
    missing = [f"{p} {a.shape}" for p, a in targets.items() if p not in tensors and p not in new]
    unexpected = [
        f"{t.name} {t.shape}" + ("" if t.name == p else f" (as {p})")
        for p, t in tensors.items()
        if p not in targets
    ]
    mismatched = [
        f"{t.name} {t.shape} for {p} {targets[p].shape}"
        for p, t in tensors.items()
        if p in targets and t.array.shape != targets[p].shape
    ]
    problems = [
        f"{what}: {_listing(items)}"
        for what, items in (
            ("missing from the source", missing),
            ("not in the model", unexpected),
            ("shapes that do not fit", mismatched),
        )
        if items
    ]
    if problems:
        raise UserError(
            f"config.init_from {source} does not fit this run's {model}: "
            + "; ".join(problems)
            + ". Is it another architecture, or other config.model options?"
        )
