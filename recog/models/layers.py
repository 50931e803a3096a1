"""Layers the built-in models share: bias-free convolutions, BatchNorm, max pooling, and stages of
blocks.

Convolutions and max pooling are the stock lax ops on every platform but the CPU, where XLA runs
recog's formulations in cpu_kernels faster. The choice is made for the platform a program is
lowered for (`lax.platform_dependent`), never by the machine that traces it: a GPU or TPU
program lowered on a CPU host, or a multi-platform export, holds each platform's own ops.

Parameters are always float32; `dtype` is the compute dtype (float32 or bfloat16).
"""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx
from jax import lax

from recog.models import cpu_kernels
from recog.models.cpu_kernels import Padding2, Shape2

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
        conv_general_dilated=conv_general_dilated,
        rngs=rngs,
    )


def conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs):
    """lax.conv_general_dilated, or on the CPU its faster formulation in cpu_kernels: chosen for
    the platform XLA lowers the program for, so a GPU or TPU program (also one lowered on a CPU
    host, or a multi-platform export) holds the stock convolution."""
    return lax.platform_dependent(
        lhs,
        rhs,
        cpu=lambda lhs, rhs: cpu_kernels.conv_general_dilated(
            lhs, rhs, window_strides, padding, **kwargs
        ),
        default=lambda lhs, rhs: lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, **kwargs
        ),
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
    return max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))


def max_pool(x: jnp.ndarray, window: Shape2, strides: Shape2, padding: Padding2) -> jnp.ndarray:
    """nnx.max_pool over NHWC (lax.reduce_window and JAX's derivatives), or on the CPU
    cpu_kernels.max_pool, chosen for the platform XLA lowers the program for."""
    return lax.platform_dependent(
        x,
        cpu=lambda x: cpu_kernels.max_pool(x, window, strides, padding),
        default=lambda x: nnx.max_pool(x, window, strides=strides, padding=padding),
    )


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
