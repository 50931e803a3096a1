"""Optimizer and learning-rate schedule from a config, using optax's own implementations.

    config.optimizer = dict(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    config.schedule = dict(name="cosine", warmup_steps=100)

`name` is any optax optimizer (sgd, adam, adamw, lamb, lion, ...); keys besides lr, weight_decay
and grad_clip_norm are passed to it. Weight decay skips biases and normalisation scales (ndim < 2):
decoupled where the optax optimizer takes `weight_decay` itself (adamw, lamb, ...), otherwise
added to the gradient before the update (classic L2 for SGD).
"""

import inspect

import jax
import ml_collections
import optax

from recog.errors import UserError, unknown_name_message

SCHEDULES = ("cosine", "constant", "linear")


def make_schedule(lr: float, schedule: ml_collections.ConfigDict, num_steps: int):
    warmup = schedule.get("warmup_steps", 0)
    name = schedule.get("name", "cosine")
    if name == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(num_steps, warmup + 1))
    if name == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
        )
    if name == "linear":
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, lr, warmup),
                optax.linear_schedule(lr, 0.0, max(num_steps - warmup, 1)),
            ],
            [warmup],
        )
    raise UserError(unknown_name_message("schedule", name, SCHEDULES))


def _decay_mask(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config: ml_collections.ConfigDict):
    """(the optax optimizer, its learning-rate schedule as a function of the step)."""
    options = dict(config.optimizer)
    name = options.pop("name")
    lr = options.pop("lr")
    weight_decay = options.pop("weight_decay", 0.0)
    clip = options.pop("grad_clip_norm", 0.0)
    factory = getattr(optax, name, None)
    if not callable(factory) or "learning_rate" not in inspect.signature(factory).parameters:
        optimizers = [
            n
            for n in dir(optax)
            if not n.startswith("_")
            and callable(getattr(optax, n))
            and n.islower()
            and "learning_rate" in inspect.signature(getattr(optax, n)).parameters
        ]
        raise UserError(unknown_name_message("optimizer", name, optimizers))
    schedule = make_schedule(lr, config.schedule, config.num_steps)
    takes_decay = "weight_decay" in inspect.signature(factory).parameters
    if takes_decay:
        options.update(weight_decay=weight_decay, mask=_decay_mask)
    try:
        optimizer = factory(learning_rate=schedule, **options)
    except TypeError as e:
        raise UserError(f"config.optimizer for optax.{name}: {e}") from None
    chain = []
    if clip:
        chain.append(optax.clip_by_global_norm(clip))
    if weight_decay and not takes_decay:
        chain.append(optax.add_decayed_weights(weight_decay, mask=_decay_mask))
    return (optax.chain(*chain, optimizer) if chain else optimizer), schedule
