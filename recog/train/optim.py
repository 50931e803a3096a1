"""Optimizer and learning-rate schedule from a config, using optax's own implementations.

    config.optimizer = dict(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    config.schedule = dict(name="cosine", warmup_steps=100)

`name` is any optax optimizer (sgd, adam, adamw, lamb, lion, ...); keys besides lr, weight_decay
and grad_clip_norm are passed to it. Weight decay skips biases and normalisation scales (ndim < 2):
decoupled where the optax optimizer takes `weight_decay` itself (adamw, lamb, ...), otherwise
added to the gradient before the update (classic L2 for SGD).

What to train, by parameter paths ('blocks/3/conv1/kernel', as `--list`'s models name them),
matched whole by regular expressions:

    config.freeze = "stem_.*|blocks/[0-2]/.*"         # these never change ("" : none)
    config.lr_factors = (("head/.*", 10.0),)          # the first matching pattern's factor

Frozen parameters get no update and no optimizer state (optax.set_to_zero in an optax.partition);
the others share one optimizer (one gradient clipping norm), and a factor scales their updates,
as a learning rate of lr * factor would. BatchNorm layers whose parameters are all frozen keep,
and normalise with, their running statistics (train_step applies this).
"""

import inspect
import re

import jax
import ml_collections
import numpy as np
import optax

from recog.errors import UserError, unknown_name_message

SCHEDULES = ("cosine", "constant", "linear")
FROZEN = "frozen"
TRAINED = "trained"


def make_schedule(lr: float, schedule: ml_collections.ConfigDict, num_steps: int):
    warmup, name = schedule.warmup_steps, schedule.name
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


def path_name(key_path) -> str:
    """A leaf's path in an nnx.State pytree as 'blocks/0/conv1/kernel'."""
    return "/".join(str(k.key) for k in key_path if isinstance(k, jax.tree_util.DictKey))


def _rules(config: ml_collections.ConfigDict) -> list[tuple[re.Pattern, float]]:
    """(pattern, factor) in order of precedence; config.freeze first, as factor 0."""
    pairs = [(config.freeze, 0.0)] if config.freeze else []
    pairs += [(pattern, float(factor)) for pattern, factor in config.lr_factors]
    rules = []
    for pattern, factor in pairs:
        if factor < 0:
            raise UserError(f"config.lr_factors: the factor of {pattern!r} is {factor}, below 0.")
        try:
            rules.append((re.compile(pattern), factor))
        except re.error as e:
            raise UserError(f"{pattern!r} (config.freeze or config.lr_factors): {e}.") from None
    return rules


def lr_factors(config: ml_collections.ConfigDict, params):
    """Each parameter's learning-rate factor, as a pytree like `params`: 0.0 where
    config.freeze matches its path, else the factor of the first config.lr_factors pattern that
    matches, else 1.0. A pattern that matches no parameter is an error."""
    rules = _rules(config)
    paths = [path_name(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for pattern, _ in rules:
        if not any(pattern.fullmatch(p) for p in paths):
            raise UserError(
                f"the pattern {pattern.pattern!r} (config.freeze or config.lr_factors) matches no "
                f"parameter; a pattern matches whole paths, such as {', '.join(paths[:3])}."
            )

    def factor(key_path, _) -> float:
        path = path_name(key_path)
        return next((f for pattern, f in rules if pattern.fullmatch(path)), 1.0)

    return jax.tree_util.tree_map_with_path(factor, params)


def _factor_label(factor: float) -> str:
    return FROZEN if factor == 0 else f"lr x{factor!r}"


def make_optimizer(config: ml_collections.ConfigDict):
    """(the optax optimizer, its learning-rate schedule as a function of the step)."""
    options = dict(config.optimizer)
    name = options.pop("name")
    lr = options.pop("lr")
    weight_decay = options.pop("weight_decay")
    clip = options.pop("grad_clip_norm")
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
    optimizer = optax.chain(*chain, optimizer) if chain else optimizer
    return _partitioned(config, optimizer), schedule


def _partitioned(config: ml_collections.ConfigDict, optimizer):
    """`optimizer` on the parameters that are not frozen, then each update scaled by its
    parameter's factor; `optimizer` itself (the same state) when everything trains at factor 1."""
    rules = _rules(config)
    if not rules:
        return optimizer

    def labels(params):
        return jax.tree.map(_factor_label, lr_factors(config, params))

    def frozen_or_trained(params):
        return jax.tree.map(lambda label: label if label == FROZEN else TRAINED, labels(params))

    optimizer = optax.partition(
        {FROZEN: optax.set_to_zero(), TRAINED: optimizer}, frozen_or_trained
    )
    factors = {f for _, f in rules} | {0.0, 1.0}
    if factors == {0.0, 1.0}:
        return optimizer
    scales = {_factor_label(f): optax.scale(f) for f in factors}
    return optax.chain(optimizer, optax.partition(scales, labels))


def frozen_paths(config: ml_collections.ConfigDict, params) -> set[str]:
    """The paths of the parameters that never change (config.freeze, or a factor of 0)."""
    return {p for p, factor in _flat(lr_factors(config, params)).items() if factor == 0}


def _flat(tree) -> dict:
    return {path_name(kp): leaf for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def training_summary(config: ml_collections.ConfigDict, params) -> list[str]:
    """Log lines: the trainable parameter count, then what is frozen and what has a factor of
    its own, each named by the fewest module paths that cover exactly it."""
    sizes = {path: int(np.prod(leaf.shape)) for path, leaf in _flat(params).items()}
    factors = _flat(lr_factors(config, params))
    trainable = sum(size for path, size in sizes.items() if factors[path] != 0)
    lines = [f"Trainable parameters: {trainable:,} of {sum(sizes.values()):,}"]
    for factor in sorted(set(factors.values()) - {1.0}):
        group = [path for path in sizes if factors[path] == factor]
        what = "Frozen" if factor == 0 else f"Learning rate x{factor:g}"
        lines.append(
            f"{what} ({len(group)} tensors, {sum(sizes[p] for p in group):,} parameters): "
            + ", ".join(_covering_modules(group, list(sizes)))
        )
    return lines


def _covering_modules(group: list[str], paths: list[str]) -> list[str]:
    """The fewest path prefixes ('blocks/0', 'stem_conv') that hold exactly the paths of `group`
    among `paths`, in order."""
    under, in_group = {}, {}
    members = set(group)
    for path in paths:
        for prefix in _prefixes(path):
            under[prefix] = under.get(prefix, 0) + 1
            in_group[prefix] = in_group.get(prefix, 0) + (path in members)
    covering = []
    for path in group:
        prefix = next(p for p in _prefixes(path) if in_group[p] == under[p])
        if prefix not in covering:
            covering.append(prefix)
    return covering


def _prefixes(path: str) -> list[str]:
    """'a/b/c' -> ['a', 'a/b', 'a/b/c']"""
    parts = path.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
