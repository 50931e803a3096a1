"""Layers the built-in ResNets share: bias-free convolutions, BatchNorm, and stages of blocks.

Parameters are always float32; `dtype` is the compute dtype (float32 or bfloat16).
"""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

# He et al. 2015 initialisation, as torchvision's ResNets use it.
HE_NORMAL_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A bias-free square convolution padded by kernel_size // 2 on every side (PyTorch-style)."""
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel_size, kernel_size),
        strides=stride,
        padding=kernel_size // 2,
        use_bias=False,
        kernel_init=HE_NORMAL_FAN_OUT,
        dtype=dtype,
        rngs=rngs,
    )


def batch_norm(
    features: int, *, zero_scale: bool = False, dtype: jnp.dtype, rngs: nnx.Rngs
) -> nnx.BatchNorm:
    """BatchNorm with PyTorch's defaults (running averages updated by 0.1 per step, eps 1e-5).

    Statistics are reduced and kept in float32 whatever the compute dtype.
    """
    return nnx.BatchNorm(
        features,
        momentum=0.9,
        epsilon=1e-5,
        scale_init=nnx.initializers.zeros if zero_scale else nnx.initializers.ones,
        dtype=dtype,
        rngs=rngs,
    )


def max_pool_3x3_stride_2(x: jnp.ndarray) -> jnp.ndarray:
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def stages(
    block: type[nnx.Module],
    blocks_per_stage: Sequence[int],
    stage_widths: Sequence[int],
    in_channels: int,
    **block_kwargs,
) -> tuple[nnx.List, int]:
    """Residual stages: the first block of every stage but the first halves the resolution.

    `block(in_channels, width, stride, **block_kwargs)` outputs `width * block.expansion`
    channels. Returns the blocks in order and the channel count they end with.
    """
    blocks = []
    channels = in_channels
    for stage, (num_blocks, width) in enumerate(zip(blocks_per_stage, stage_widths, strict=True)):
        for index in range(num_blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            blocks.append(block(channels, width, stride, **block_kwargs))
            channels = width * block.expansion
    return nnx.List(blocks), channels
