"""Layers the built-in models share: bias-free convolutions, BatchNorm, max pooling, and stages of
blocks.

Parameters are always float32; `dtype` is the compute dtype (float32 or bfloat16).
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

Shape2 = tuple[int, int]
Padding2 = tuple[tuple[int, int], tuple[int, int]]

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


def conv_general_dilated(lhs, rhs, window_strides, padding, *args, **kwargs):
    """lax.conv_general_dilated of a `materialized` input, except for two kinds of plain NHWC
    convolution that XLA's CPU backend runs far below its matmul speed, computed here as one
    matmul instead:

    - 1x1 kernels without padding (ResNet-50's bottlenecks, every downsampling shortcut): the
      pixels times the kernel. Their weight gradients ran at 40-80 GFLOP/s as convolutions
      (ResNet-50 train step at 128 px: 10.0-10.5 -> 12.3-12.8 images/sec);
    - inputs smaller than the kernel (a 3x3 kernel on ResNet's last 2x2 or 1x1 feature maps, at
      64 or 32 px): the kernel's taps, gathered, times the kernel. XLA rewrote those
      convolutions into a form it ran about 30x slower (ResNet-18 at 64 px: 17 -> 109
      images/sec).
    """
    kernel_size, spatial = rhs.shape[:-2], lhs.shape[1:-1]
    plain = (
        not args
        and kwargs.get("lhs_dilation") in (None, (1,) * len(spatial))
        and kwargs.get("rhs_dilation") in (None, (1,) * len(spatial))
        and kwargs.get("feature_group_count", 1) == 1
        and kwargs.get("dimension_numbers")
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    )
    if plain and isinstance(padding, str):
        padding = lax.padtype_to_pads(spatial, kernel_size, window_strides, padding)
    pointwise = all(k == 1 for k in kernel_size) and all(tuple(p) == (0, 0) for p in padding)
    smaller = any(s < k for s, k in zip(spatial, kernel_size, strict=True))
    lhs = materialized(lhs)
    if not plain or not (pointwise or smaller):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, *args, **kwargs)
    padded = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    patches = jnp.concatenate(taps(padded, kernel_size, window_strides), axis=-1)
    # A 2-D matmul: as a 4-D dot_general, XLA's CPU weight gradient transposes and runs slower.
    out = lax.dot_general(
        patches.reshape(-1, patches.shape[-1]),
        rhs.reshape(-1, rhs.shape[-1]),
        (((1,), (0,)), ((), ())),
        precision=kwargs.get("precision"),
        preferred_element_type=kwargs.get("preferred_element_type"),
    )
    return out.reshape(*patches.shape[:-1], rhs.shape[-1])


def materialized(x: jnp.ndarray) -> jnp.ndarray:
    """`x`, computed into a buffer of its own on XLA's CPU backend (elsewhere, `x` as it is).

    A convolution's weight gradient reads its input transposed. XLA's CPU backend fuses the
    BatchNorm, ReLU and residual-add chain that makes that input into the transpose, so every
    array of the chain is re-read in transposed order: 29-38 ms instead of 5 for one 64x32x32x64
    activation (ResNet-18 train step at 128 px, batch 64: 35.6-36.3 -> 41.0-41.3 images/sec;
    ResNet-50: 13.0 -> 13.9). lax.optimization_barrier would say this, but the CPU backend drops
    it before fusing; a conditional it keeps. Both branches return `x`, whatever its first
    element (the predicate only has to be unknown to XLA).
    """
    if jax.default_backend() != "cpu":
        return x
    return lax.cond(jnp.isfinite(x[(0,) * x.ndim]), lambda x: x, lambda x: x * 1, x)


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jnp.ndarray, window: Shape2, strides: Shape2, padding: Padding2) -> jnp.ndarray:
    """Max pooling over NHWC, equal to nnx.max_pool and with its gradient: to the first maximum
    of each window, in row-major order. The forward pass notes which tap won; the backward pass
    sends each window's gradient there. JAX differentiates reduce_window through a
    select-and-gather that XLA's CPU backend runs slowly: 300 ms of ResNet-18's 2 s train step
    at 128 px, batch 64, for its one pool (this: 64 ms)."""
    return _max_pool_and_argmax(x, window, strides, padding)[0]


def taps(padded: jnp.ndarray, window: Shape2, strides: Shape2) -> list[jnp.ndarray]:
    """The input under each tap of a window sliding over an NHWC `padded`, taps in row-major
    order: one (N, out_h, out_w, C) array per tap."""
    (sh, sw), (height, width) = strides, padded.shape[1:3]
    rows = (height - window[0]) // sh * sh + 1  # the span of the first tap's row positions
    cols = (width - window[1]) // sw * sw + 1
    return [
        padded[:, i : i + rows : sh, j : j + cols : sw, :]
        for i in range(window[0])
        for j in range(window[1])
    ]


def _max_pool_and_argmax(x, window, strides, padding):
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
    first, *rest = taps(padded, window, strides)
    pooled, argmax = first, jnp.zeros(first.shape, jnp.int8)
    for index, tap in enumerate(rest, start=1):
        argmax = jnp.where(tap > pooled, jnp.int8(index), argmax)  # ties keep the first
        pooled = jnp.maximum(tap, pooled)  # NaN wins, as in reduce_window
    return pooled, argmax


def _max_pool_forward(x, window, strides, padding):
    pooled, argmax = _max_pool_and_argmax(x, window, strides, padding)
    return pooled, (x.shape, argmax)


def _max_pool_backward(window, strides, padding, residuals, grad):
    shape, argmax = residuals
    (top, bottom), (left, right) = padding
    padded_shape = (shape[0], shape[1] + top + bottom, shape[2] + left + right, shape[3])
    (oh, ow), (sh, sw) = grad.shape[1:3], strides
    rows, cols = (oh - 1) * sh + 1, (ow - 1) * sw + 1
    grad_padded = jnp.zeros(padded_shape, grad.dtype)
    for index in range(window[0] * window[1]):
        i, j = divmod(index, window[1])
        placement = (
            (0, 0, 0),
            (i, padded_shape[1] - i - rows, sh - 1),
            (j, padded_shape[2] - j - cols, sw - 1),
            (0, 0, 0),
        )
        routed = jnp.where(argmax == index, grad, 0)
        grad_padded += lax.pad(routed, jnp.zeros((), grad.dtype), placement)
    return (grad_padded[:, top : top + shape[1], left : left + shape[2], :],)


max_pool.defvjp(_max_pool_forward, _max_pool_backward)


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
