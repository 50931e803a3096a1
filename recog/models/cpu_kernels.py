"""Convolution and max pooling as XLA's CPU backend runs them fastest.

recog.models.layers chooses these for programs lowered for the CPU only
(`jax.lax.platform_dependent`); GPUs and TPUs get stock `lax.conv_general_dilated` and
`lax.reduce_window`, which their backends tune. Every function here computes the same values
and gradients as the stock op (tests/test_models.py), reordered float sums aside, and supports
forward- and reverse-mode differentiation. The figures are train steps at 128 px, batch 64, on
2 AVX-512 cores (benchmarks/train_step.py).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero, linear_call

Shape2 = tuple[int, int]
Padding2 = tuple[tuple[int, int], tuple[int, int]]


def conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs):
    """lax.conv_general_dilated of a `materialized` input, except for two kinds of plain NHWC
    convolution that XLA's CPU backend runs far below its matmul speed, computed here as one
    matmul instead:

    - 1x1 kernels without padding (ResNet-50's bottlenecks, every downsampling shortcut): the
      pixels times the kernel. Their weight gradients ran at 40-80 GFLOP/s as convolutions
      (ResNet-50 train step 10.0-10.5 -> 12.3-12.8 images/sec);
    - inputs smaller than the kernel (a 3x3 kernel on ResNet's last 2x2 or 1x1 feature maps, at
      64 or 32 px): the kernel's taps, gathered, times the kernel. XLA rewrote those
      convolutions into a form it ran about 30x slower (ResNet-18 at 64 px: 17 -> 109
      images/sec).

    Depthwise convolutions (EfficientNet's) are computed elementwise: `depthwise_conv`.
    """
    kernel_size, spatial = rhs.shape[:-2], lhs.shape[1:-1]
    groups = kwargs.get("feature_group_count", 1)
    undilated_nhwc = (
        kwargs.get("lhs_dilation") in (None, (1,) * len(spatial))
        and kwargs.get("rhs_dilation") in (None, (1,) * len(spatial))
        and kwargs.get("batch_group_count", 1) == 1
        and kwargs.get("dimension_numbers")
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    )
    if undilated_nhwc and isinstance(padding, str):
        padding = lax.padtype_to_pads(spatial, kernel_size, window_strides, padding)
    if undilated_nhwc and groups == lhs.shape[-1] == rhs.shape[-1] and rhs.shape[-2] == 1:
        return depthwise_conv(materialized(lhs), rhs, window_strides, padding)
    plain = undilated_nhwc and groups == 1
    pointwise = all(k == 1 for k in kernel_size) and all(tuple(p) == (0, 0) for p in padding)
    smaller = any(s < k for s, k in zip(spatial, kernel_size, strict=True))
    lhs = materialized(lhs)
    if not plain or not (pointwise or smaller):
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
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


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def depthwise_conv(lhs, rhs, window_strides, padding):
    """A depthwise convolution (one k x k filter per channel, HWIO kernel (k, k, 1, C)) as the sum
    over the kernel's taps of the shifted input times the tap's weights: elementwise work that
    XLA's CPU backend fuses, where it ran the grouped convolution and above all its weight
    gradient as dense ones (EfficientNet-Lite0 train step at 224 px, batch 32, 2 cores: 2.3 ->
    6.7-8.0 images/sec; benchmarks/README.md, 2026-12-07)."""
    padded = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    return _tap_sum(padded, rhs, window_strides)


def _depthwise_conv_jvp(window_strides, padding, primals, tangents):
    """Each tangent term is a `linear_call` whose transpose, the gradient, is written out rather
    than left to JAX: the input gradient as tap sums over the output gradient (one per stride
    phase), the weight gradient as one reduction over a few images at a time. JAX's own
    transposes wrote each tap's shifted input or gradient out before summing. Lite0's depthwise
    layers at batch 32 in all, 2 AVX-512 cores: input gradients 276 -> 87 ms, weight gradients
    585 -> 222 ms (`python benchmarks/depthwise.py`, 2026-12-07; XLA's grouped convolution:
    7,186 and 2,974 ms). A frozen input or kernel has a symbolic zero tangent, and its term is
    left out."""
    (lhs, rhs), (lhs_tangent, rhs_tangent) = primals, tangents
    padded = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    out = _tap_sum(padded, rhs, window_strides)
    terms = []
    if not isinstance(lhs_tangent, SymbolicZero):
        terms.append(
            linear_call(
                lambda rhs, t: _tap_sum(
                    jnp.pad(t, ((0, 0), *padding, (0, 0))), rhs, window_strides
                ),
                lambda rhs, g: _input_gradient(rhs, g, lhs.shape, window_strides, padding),
                rhs,
                lhs_tangent,
            )
        )
    if not isinstance(rhs_tangent, SymbolicZero):
        terms.append(
            linear_call(
                lambda padded, t: _tap_sum(padded, t, window_strides),
                lambda padded, g: _weight_gradient(padded, g, rhs.shape, rhs.dtype, window_strides),
                padded,
                rhs_tangent,
            )
        )
    return out, sum(terms) if terms else jnp.zeros_like(out)


depthwise_conv.defjvp(_depthwise_conv_jvp, symbolic_zeros=True)


def _tap_sum(padded, rhs, window_strides):
    kernel = rhs.reshape(-1, rhs.shape[-1]).astype(padded.dtype)
    tapped = taps(padded, rhs.shape[:2], window_strides)
    return sum(tap * kernel[index] for index, tap in enumerate(tapped))


def _input_gradient(rhs, out_grad, lhs_shape, window_strides, padding):
    """The gradient of the input: with stride s, input row s * m + e - pad gathers output rows
    m - q through kernel row s * q + e, so each of the s x s phases (e_h, e_w) is a stride-1
    tap sum over the output gradient with the phase's taps of the kernel, flipped; the phases
    are then interleaved."""
    (sh, sw), (kh, kw) = window_strides, rhs.shape[:2]
    (low_h, _), (low_w, _) = padding
    height, width = lhs_shape[1:3]
    rows, cols = -(-(low_h + height) // sh), -(-(low_w + width) // sw)  # per phase
    taps_h, taps_w = -(-kh // sh), -(-kw // sw)  # at most, per phase
    grad_rows, grad_cols = out_grad.shape[1:3]
    padded = jnp.pad(
        out_grad,
        (
            (0, 0),
            (taps_h - 1, max(rows - grad_rows, 0)),
            (taps_w - 1, max(cols - grad_cols, 0)),
            (0, 0),
        ),
    )
    phases = []
    for e_h in range(sh):
        for e_w in range(sw):
            kernel = rhs[e_h::sh, e_w::sw][::-1, ::-1]
            if kernel.size == 0:
                phases.append(
                    jnp.zeros((out_grad.shape[0], rows, cols, rhs.shape[-1]), padded.dtype)
                )
                continue
            start_h, start_w = taps_h - kernel.shape[0], taps_w - kernel.shape[1]
            window = padded[
                :,
                start_h : start_h + rows + kernel.shape[0] - 1,
                start_w : start_w + cols + kernel.shape[1] - 1,
            ]
            phases.append(_tap_sum(window, kernel, (1, 1)))
    interleaved = jnp.stack(phases, axis=3)  # (N, rows, cols, sh * sw, C)
    interleaved = interleaved.reshape(out_grad.shape[0], rows, cols, sh, sw, -1)
    interleaved = jnp.moveaxis(interleaved, 3, 2).reshape(
        out_grad.shape[0], rows * sh, cols * sw, -1
    )
    return interleaved[:, low_h : low_h + height, low_w : low_w + width]


# Lite0's depthwise weight gradients at batch 32 in all, 2 AVX-512 cores, 2026-12-07 (`python
# benchmarks/depthwise.py --noxla --images_per_block=N`, ms): 1 image 237, 2 202, 4 238, 8 262.
DEPTHWISE_IMAGES_PER_BLOCK = 2


def _weight_gradient(padded, out_grad, kernel_shape, kernel_dtype, window_strides):
    """The gradient of the kernel: every tap's sum of its shifted input times the output
    gradient, in one reduction over DEPTHWISE_IMAGES_PER_BLOCK images at a time (a scan), whose
    blocks stay in cache while the reduction reads them once for all the taps. Sums are float32
    whatever the compute dtype."""
    per_block = DEPTHWISE_IMAGES_PER_BLOCK
    missing = -padded.shape[0] % per_block
    if missing:  # zero images add nothing
        padded, out_grad = (
            jnp.pad(a, ((0, missing), (0, 0), (0, 0), (0, 0))) for a in (padded, out_grad)
        )

    def add_block(total, block):
        block_input, block_grad = block
        products = [
            tap.astype(jnp.float32) * block_grad.astype(jnp.float32)
            for tap in taps(block_input, kernel_shape[:2], window_strides)
        ]
        sums = lax.reduce(
            products,
            [jnp.float32(0)] * len(products),
            lambda a, b: tuple(x + y for x, y in zip(a, b, strict=True)),
            (0, 1, 2),
        )
        return total + jnp.stack(sums), None

    blocks = (a.reshape(-1, per_block, *a.shape[1:]) for a in (padded, out_grad))
    zeros = jnp.zeros((kernel_shape[0] * kernel_shape[1], kernel_shape[-1]), jnp.float32)
    total, _ = lax.scan(add_block, zeros, tuple(blocks))
    return total.reshape(kernel_shape).astype(kernel_dtype)


def materialized(x: jnp.ndarray) -> jnp.ndarray:
    """`x`, computed into a buffer of its own.

    A convolution's weight gradient reads its input transposed. XLA's CPU backend fuses the
    BatchNorm, ReLU and residual-add chain that makes that input into the transpose, so every
    array of the chain is re-read in transposed order: 29-38 ms instead of 5 for one 64x32x32x64
    activation (ResNet-18 train step 35.6-36.3 -> 41.0-41.3 images/sec; ResNet-50: 13.0 ->
    13.9). lax.optimization_barrier would say this, but the CPU backend drops it before fusing;
    a conditional it keeps. Both branches return `x`, whatever its first element (the predicate
    only has to be unknown to XLA).
    """
    return lax.cond(jnp.isfinite(x[(0,) * x.ndim]), lambda x: x, lambda x: x * 1, x)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jnp.ndarray, window: Shape2, strides: Shape2, padding: Padding2) -> jnp.ndarray:
    """Max pooling over NHWC, equal to nnx.max_pool and with its derivatives: each window's
    tangent is its first maximum's, in row-major order, as JAX's. The forward pass notes which
    tap won; the tangent (and, transposed, the gradient) goes through that index. JAX
    differentiates reduce_window through a select-and-gather that XLA's CPU backend runs slowly:
    forward + backward of ResNet-18's 3x3/2 pool at 128 px, batch 64, 352 ms (this: 87-98 ms;
    jitted `jax.grad` of `sum(pool(x) * w)`, median of 15, same run)."""
    return _max_pool_and_argmax(x, window, strides, padding)[0]


@max_pool.defjvp
def _max_pool_jvp(window, strides, padding, primals, tangents):
    (x,), (tangent,) = primals, tangents
    pooled, argmax = _max_pool_and_argmax(x, window, strides, padding)
    tangent_taps = taps(jnp.pad(tangent, ((0, 0), *padding, (0, 0))), window, strides)
    # A sum of selects is linear in the tangent, so JAX transposes it for the gradient: each
    # window's cotangent is padded back onto its winning tap's input position.
    tangent_out = sum(
        jnp.where(argmax == index, tap, jnp.zeros((), tap.dtype))
        for index, tap in enumerate(tangent_taps)
    )
    return pooled, tangent_out


def _max_pool_and_argmax(x, window, strides, padding):
    padded = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
    first, *rest = taps(padded, window, strides)
    pooled, argmax = first, jnp.zeros(first.shape, jnp.int8)
    for index, tap in enumerate(rest, start=1):
        argmax = jnp.where(tap > pooled, jnp.int8(index), argmax)  # ties keep the first
        pooled = jnp.maximum(tap, pooled)  # NaN wins, as in reduce_window
    return pooled, argmax


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
