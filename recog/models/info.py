"""Figures that describe a registered model without building its weights: parameter count and
forward-pass GFLOPs.

Both work on an abstract model (`nnx.eval_shape`: shapes and dtypes, no arrays). GFLOPs come from
XLA's cost analysis of the lowered (not compiled) inference forward pass of one image, in which a
multiply-add counts as 2 flops; taps that fall on zero padding are not counted, so ResNet-50's
published 4.1 GMACs show as 7.95 GFLOPs rather than 8.2.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from recog.registry import MODELS


def abstract_model(
    name: str, num_classes: int = 1000, in_channels: int = 3, **config
) -> nnx.Module:
    """The registered model `name` built with `config` (its defaults for the rest), as shapes only.

    Cached: callers must not change it in place (`.train()`, `.eval()`); split and merge instead.
    """
    return _abstract_model(name, num_classes, in_channels, tuple(sorted(config.items())))


@functools.cache
def _abstract_model(name: str, num_classes: int, in_channels: int, config: tuple) -> nnx.Module:
    factory = MODELS.get(name)

    def build(key: jax.Array) -> nnx.Module:
        # Only the key is traced. Every draw from an nnx.Rngs stream updates its counter, and
        # with a traced counter flax and jax 0.10 inspect the whole trace on each update, which
        # made this quadratic in depth (5 s for ResNet-200); a concrete counter keeps it linear.
        with jax.ensure_compile_time_eval():
            return factory(num_classes, in_channels=in_channels, rngs=nnx.Rngs(key), **dict(config))

    return nnx.eval_shape(build, jax.random.key(0))


def param_count(name: str, num_classes: int = 1000, in_channels: int = 3) -> int:
    """Number of trainable parameters (nnx.Param; BatchNorm statistics are not parameters)."""
    params = nnx.state(abstract_model(name, num_classes, in_channels), nnx.Param)
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def gflops(
    name: str, image_size: int = 224, num_classes: int = 1000, in_channels: int = 3
) -> float:
    """Flops of one image's forward pass in eval mode, in units of 1e9 (multiply-add = 2)."""
    graphdef, state = nnx.split(abstract_model(name, num_classes, in_channels))
    image = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)

    def forward(state: nnx.State, images: jax.Array) -> jax.Array:
        model = nnx.merge(graphdef, state)
        model.eval()
        return model(images)

    return jax.jit(forward).lower(state, image).cost_analysis()["flops"] / 1e9


def listing_figures(name: str) -> tuple[str, str]:
    """(params in millions, GFLOPs at 224 px) as `--list` prints them; "-" where one fails."""
    try:
        params = f"{param_count(name) / 1e6:.2f}M"
    except Exception:  # a plugin's model may need config keys its factory has no default for
        return "-", "-"
    try:
        flops = f"{gflops(name):.2f}"
    except Exception:  # or may not take 224x224x3 images (a model for 8x8 digits, say)
        flops = "-"
    return params, flops
