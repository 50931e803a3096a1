"""The train state and the jit-compiled steps, as pure functions of the state.

The model is split once into a graph definition and its state (`nnx.split`); the steps merge them
inside jit, so no Python object graph is walked per step. The state is a plain dict:
    {"step": int32, "params": nnx.State, "model_state": nnx.State, "opt_state": optax state}
where model_state holds everything that is not a parameter (BatchNorm statistics, RNG counters).
Its arrays are replicated over the mesh; the batch is sharded over the data axis, so BatchNorm
sees global-batch statistics without explicit collectives.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import Mesh

from recog import parallel
from recog.errors import UserError
from recog.registry import MODELS
from recog.train.optim import make_optimizer, make_schedule

State = dict[str, Any]
Batch = dict[str, jax.Array]


def create_model(config: ml_collections.ConfigDict, num_classes: int, in_channels: int, seed: int):
    """Builds the registered model named by config.model.name with the other config.model keys."""
    kwargs = {k: v for k, v in config.model.items() if k != "name"}
    factory = MODELS.get(config.model.name)
    try:
        return factory(
            num_classes=num_classes, in_channels=in_channels, rngs=nnx.Rngs(seed), **kwargs
        )
    except TypeError as e:
        raise UserError(f"model {config.model.name!r} rejected config.model: {e}") from None


def normalize(images: jax.Array, mean, std) -> jax.Array:
    """uint8 images -> float32, scaled to [0, 1], then standardised per channel."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


@dataclasses.dataclass(frozen=True)
class Steps:
    """What the loop and the eval binary call; all compiled for one mesh."""

    init: Callable[[], State]
    train: Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]
    eval: Callable[[State, Batch], dict[str, jax.Array]]
    abstract_state: State
    schedule: Callable[[int], float]


def build_steps(
    config: ml_collections.ConfigDict, num_classes: int, in_channels: int, mesh: Mesh
) -> Steps:
    abstract_model = nnx.eval_shape(
        lambda: create_model(config, num_classes, in_channels, config.seed)
    )
    abstract_model.train()
    train_graph, _, _ = nnx.split(abstract_model, nnx.Param, ...)
    abstract_model.eval()
    eval_graph, _, _ = nnx.split(abstract_model, nnx.Param, ...)
    optimizer = make_optimizer(config)
    mean, std = config.data.mean, config.data.std
    smoothing = config.get("label_smoothing", 0.0)
    replicated = parallel.replicated(mesh)

    def init() -> State:
        model = create_model(config, num_classes, in_channels, config.seed)
        _, params, model_state = nnx.split(model, nnx.Param, ...)
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "model_state": model_state,
            "opt_state": optimizer.init(params),
        }

    def train_step(state: State, batch: Batch):
        labels = batch["label"]
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)

        def loss_fn(params, model_state):
            model = nnx.merge(train_graph, params, model_state, copy=True)
            logits = model(normalize(batch["image"], mean, std))
            loss = optax.softmax_cross_entropy(logits, targets).mean()
            _, _, model_state = nnx.split(model, nnx.Param, ...)
            return loss, (logits, model_state)

        (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["model_state"]
        )
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new_state = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "model_state": model_state,
            "opt_state": opt_state,
        }
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
            "grad_norm": optax.tree.norm(grads),
        }
        return new_state, metrics

    def eval_step(state: State, batch: Batch):
        model = nnx.merge(eval_graph, state["params"], state["model_state"])
        logits = model(normalize(batch["image"], mean, std))
        mask = batch["mask"].astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        return {
            "loss_sum": jnp.sum(losses * mask),
            "correct": jnp.sum(correct * mask),
            "count": jnp.sum(mask),
        }

    jit_init = jax.jit(init, out_shardings=replicated)
    return Steps(
        init=jit_init,
        train=jax.jit(train_step, out_shardings=(replicated, replicated), donate_argnums=0),
        eval=jax.jit(eval_step, out_shardings=replicated),
        abstract_state=jax.eval_shape(jit_init),
        schedule=make_schedule(config.optimizer.lr, config.schedule, config.num_steps),
    )


def evaluate(steps: Steps, state: State, batches) -> dict[str, float]:
    """Runs the eval step over an iterable of global batches; one host sync at the end."""
    totals = None
    for batch in batches:
        sums = steps.eval(state, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = float(totals["count"])
    return {
        "loss": float(totals["loss_sum"]) / count,
        "accuracy": float(totals["correct"]) / count,
        "num_examples": int(count),
    }
