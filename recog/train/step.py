"""The train state and the jit-compiled steps, as pure functions of the state.

The model is split once into a graph definition and its state (`nnx.split`); the steps merge them
inside jit, so no Python object graph is walked per step. The state is a plain dict:
    {"step": int32, "params": nnx.State, "model_state": nnx.State, "opt_state": optax state}
where model_state holds everything that is not a parameter (BatchNorm statistics, RNG counters).
plus "ema_params" when config.ema_decay is set. Its arrays are replicated over the mesh (or split,
with config.sharding="fsdp"); the batch is sharded over the data axis, so BatchNorm sees
global-batch statistics without explicit collectives.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from recog import parallel, views
from recog.augment.batch import parse_batch
from recog.errors import UserError
from recog.registry import MODELS
from recog.train import evaluation
from recog.train.optim import frozen_paths, make_optimizer, path_name

State = dict[str, Any]
Batch = dict[str, jax.Array]
MATMUL_MODULES = (nnx.Conv, nnx.ConvTranspose, nnx.Linear, nnx.LinearGeneral, nnx.Einsum)


def create_model(config: ml_collections.ConfigDict, num_classes: int, in_channels: int, seed: int):
    """Builds the registered model named by config.model.name with the other config.model keys."""
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    factory = MODELS.get(config.model.name)
    try:
        model = factory(
            num_classes=num_classes, in_channels=in_channels, rngs=nnx.Rngs(seed), **kwargs
        )
    except TypeError as e:
        raise UserError(f"model {config.model.name!r} rejected config.model: {e}") from None
    if jnp.dtype(kwargs.get("dtype", "float32")) == jnp.float32:
        full_float32_precision(model)
    return model


def full_float32_precision(model: nnx.Module) -> None:
    """A float32 model's convolutions and matmuls computed in full float32 on every platform.

    XLA's default precision is one bfloat16 pass on TPUs and TF32 on NVIDIA GPUs since Ampere
    (about 1e-3 relative error): less exact than the float32 the config asks for. Models that
    compute in bfloat16 are left as they are; their operands are bfloat16 already.
    """
    for _, node in nnx.iter_graph(model):
        if isinstance(node, MATMUL_MODULES) and node.precision is None:
            node.precision = jax.lax.Precision.HIGHEST


def keep_batch_norm_statistics(model: nnx.Module, frozen: set[str], everywhere: bool) -> None:
    """BatchNorm layers whose parameters are all in `frozen` (every one, with `everywhere`)
    normalise with their running statistics in training too, and so leave them as they are:
    what freezing a layer means, and config.frozen_batch_stats's fine-tuning habit (Keras')."""
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.BatchNorm) and everywhere:
            node.use_running_average = True
        elif isinstance(node, nnx.BatchNorm):
            params = [
                "/".join(map(str, (*path, name)))
                for name in ("scale", "bias")
                if getattr(node, name) is not None
            ]
            if params and all(p in frozen for p in params):
                node.use_running_average = True


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """Images 0..255 (uint8, or float32 from on-device augmentation) -> float32, scaled to
    [0, 1], then standardised per channel."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Steps:
    """What the loop and the eval binary call; all compiled for one mesh."""

    init: Callable[[], State]
    start: Callable[[nnx.State, nnx.State], State]  # step 0 from given weights, fresh optimizer
    train: Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]
    eval: Callable[[State, Batch], dict[str, jax.Array]]  # with the raw weights
    eval_ema: Callable[[State, Batch], dict[str, jax.Array]] | None  # with their moving average
    abstract_state: State
    schedule: Callable[[int], float]


def state_shardings(abstract_state: State, mesh: Mesh, mode: str):
    """`replicated`: every array on every device. `fsdp`: parameters, their moving average and the
    optimizer state split over the data axis along their largest dimension that divides evenly
    (small or indivisible arrays stay replicated); jit inserts the all-gathers."""
    replicated = parallel.replicated(mesh)
    if mode == "replicated":
        return jax.tree.map(lambda _: replicated, abstract_state)
    if mode != "fsdp":
        raise UserError(f"config.sharding must be 'replicated' or 'fsdp', not {mode!r}.")

    def split_largest_axis(leaf):
        axes = [a for a in range(leaf.ndim) if leaf.shape[a] % mesh.size == 0]
        if not axes or leaf.size < 1024:
            return replicated
        axis = max(axes, key=lambda a: leaf.shape[a])
        spec = [None] * leaf.ndim
        spec[axis] = parallel.DATA_AXIS
        return NamedSharding(mesh, PartitionSpec(*spec))

    sharded = {"params", "ema_params", "opt_state"}
    return {
        key: jax.tree.map(split_largest_axis if key in sharded else lambda _: replicated, value)
        for key, value in abstract_state.items()
    }


def check_accumulation(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
    steps = config.grad_accum_steps
    if steps < 1 or config.batch_size % steps or (config.batch_size // steps) % mesh.size:
        raise UserError(
            f"config.batch_size={config.batch_size} must split into config.grad_accum_steps="
            f"{steps} micro-batches that each divide over the {mesh.size} devices."
        )


def build_steps(
    config: ml_collections.ConfigDict, num_classes: int, in_channels: int, mesh: Mesh
) -> Steps:
    abstract_model = nnx.eval_shape(
        lambda: create_model(config, num_classes, in_channels, config.seed)
    )
    _, abstract_params, _ = nnx.split(abstract_model, nnx.Param, ...)
    frozen = frozen_paths(config, abstract_params)
    abstract_model.train()
    keep_batch_norm_statistics(abstract_model, frozen, config.frozen_batch_stats)
    train_graph, _, _ = nnx.split(abstract_model, nnx.Param, ...)
    abstract_model.eval()
    eval_graph, _, _ = nnx.split(abstract_model, nnx.Param, ...)
    optimizer, schedule = make_optimizer(config)
    mean, std = config.data.mean, config.data.std
    smoothing = config.label_smoothing
    ema_decay = config.ema_decay
    accumulation = config.grad_accum_steps
    eval_views = views.of(config)
    batch_pipeline = parse_batch(config.data.batch_pipeline)
    replicated = parallel.replicated(mesh)

    def start(params, model_state) -> State:
        state = {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "model_state": model_state,
            "opt_state": optimizer.init(params),
        }
        if ema_decay:
            state["ema_params"] = jax.tree.map(jnp.copy, params)
        return state

    def init() -> State:
        model = create_model(config, num_classes, in_channels, config.seed)
        _, params, model_state = nnx.split(model, nnx.Param, ...)
        return start(params, model_state)

    def loss_fn(params, model_state, images, targets):
        if frozen:  # no gradient at all, so XLA drops the backward pass that only they need
            params = jax.tree_util.tree_map_with_path(
                lambda kp, p: jax.lax.stop_gradient(p) if path_name(kp) in frozen else p, params
            )
        model = nnx.merge(train_graph, params, model_state, copy=True)
        logits = model(images)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        _, _, model_state = nnx.split(model, nnx.Param, ...)
        return loss, (logits, model_state)

    gradients = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulated_gradients(params, model_state, images, targets):
        """The mean gradient over `accumulation` micro-batches, run one after another."""

        def micro_batches(x):  # every micro-batch keeps a share of every device's examples
            return x.reshape(x.shape[0] // accumulation, accumulation, *x.shape[1:]).swapaxes(0, 1)

        def one(carry, micro_batch):
            grad_sum, model_state = carry
            (loss, (logits, model_state)), grads = gradients(params, model_state, *micro_batch)
            return (jax.tree.map(jnp.add, grad_sum, grads), model_state), (loss, logits)

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grad_sum, model_state), (losses, logits) = jax.lax.scan(
            one,
            (zeros, model_state),
            (micro_batches(images), micro_batches(targets)),
        )
        logits = logits.swapaxes(0, 1).reshape(images.shape[0], -1)
        grads = jax.tree.map(lambda g: g / accumulation, grad_sum)
        return (losses.mean(), (logits, model_state)), grads

    def train_step(state: State, batch: Batch):
        labels = batch["label"]
        # Keyed by seed and step alone, so a resumed run augments exactly as an uninterrupted one.
        mix_key = jax.random.fold_in(jax.random.key(config.seed), state["step"])
        images = batch["image"]
        if batch_pipeline.image_ops:
            images = batch_pipeline.augment_images(images, jax.random.fold_in(mix_key, 1))
        images = normalize(images, mean, std)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)
        images, targets = batch_pipeline.mix(images, targets, mix_key)
        compute = gradients if accumulation == 1 else accumulated_gradients
        (loss, (logits, model_state)), grads = compute(
            state["params"], state["model_state"], images, targets
        )
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {
            "step": state["step"] + 1,
            "params": params,
            "model_state": model_state,
            "opt_state": opt_state,
        }
        if ema_decay:
            new_state["ema_params"] = optax.incremental_update(
                params, state["ema_params"], 1.0 - ema_decay
            )
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        }
        return new_state, metrics

    def make_eval_step(weights: str):
        def eval_step(state: State, batch: Batch):
            model = nnx.merge(eval_graph, state[weights], state["model_state"])
            images = normalize(batch["image"], mean, std)
            logits = views.average_logits(model, images, eval_views)
            return evaluation.batch_sums(logits, batch["label"], batch["mask"], num_classes)

        return jax.jit(eval_step, out_shardings=replicated)

    shardings = state_shardings(jax.eval_shape(init), mesh, config.sharding)
    jit_init = jax.jit(init, out_shardings=shardings)
    return Steps(
        init=jit_init,
        start=jax.jit(start, out_shardings=shardings),
        train=jax.jit(train_step, out_shardings=(shardings, replicated), donate_argnums=0),
        eval=make_eval_step("params"),
        eval_ema=make_eval_step("ema_params") if ema_decay else None,
        abstract_state=jax.eval_shape(jit_init),
        schedule=schedule,
    )
