"""Where EfficientNet-Lite0's depthwise convolutions spend a train step on the CPU: each of its
depthwise layers at 224 px (batch --batch_size), timed alone as jitted JAX programs: the forward
pass, the input gradient and the weight gradient, of recog's CPU kernel
(recog/models/cpu_kernels.depthwise_conv) and of XLA's grouped convolution in the same run.

    python benchmarks/depthwise.py [--batch_size=32] [--repeats=5] [--images_per_block=2] [--noxla]

Median of --repeats calls after two warm-up calls, in milliseconds; the totals count each layer
as often as Lite0 has it. It restarts itself with huge pages for malloc, as recog's training
binary does (recog/startup.py). Nothing here asserts a time: it prints figures.
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax import lax

from recog import startup
from recog.models import cpu_kernels, efficientnet_lite

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per call.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls per figure.")

_IMAGES_PER_BLOCK = flags.DEFINE_integer(
    "images_per_block", cpu_kernels.DEPTHWISE_IMAGES_PER_BLOCK, "The weight gradient's block."
)
_XLA = flags.DEFINE_bool("xla", True, "Also time XLA's grouped convolution (slow: minutes).")


def lite0_layers(image_size: int = 224) -> list[tuple[int, int, int, int, int]]:
    """Lite0's depthwise layers, from its stage table: (input side, channels, kernel size,
    stride, how many), in order, repeats merged."""
    side, channels, layers = image_size // 2, efficientnet_lite.STEM_CHANNELS, []
    for repeats, kernel, first_stride, expand, out_channels in efficientnet_lite.STAGES:
        for index in range(repeats):
            stride = first_stride if index == 0 else 1
            layer = (side, channels * expand, kernel, stride)
            if layers and layers[-1][:4] == layer:
                layers[-1] = (*layer, layers[-1][4] + 1)
            else:
                layers.append((*layer, 1))
            side, channels = -(-side // stride), out_channels
    return layers


PARTS = ("forward", "input gradient", "weight gradient")


def stock(x, w, strides, padding):
    """XLA's grouped convolution, what accelerators run."""
    return lax.conv_general_dilated(
        x,
        w,
        strides,
        padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1],
    )


def call(conv, strides, padding, x, w):
    return conv(x, w, strides, padding)


def programs(conv, x, w, out_grad):
    """The forward pass and each gradient alone, jitted."""
    loss = lambda x, w, out_grad: jnp.vdot(conv(x, w), out_grad)
    return (
        (jax.jit(conv), (x, w)),
        (jax.jit(jax.grad(loss, 0)), (x, w, out_grad)),
        (jax.jit(jax.grad(loss, 1)), (x, w, out_grad)),
    )


def milliseconds(program, args) -> float:
    for _ in range(2):
        jax.block_until_ready(program(*args))
    times = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        jax.block_until_ready(program(*args))
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def cell(figures: dict, part: str) -> str:
    xla = f"{figures['xla', part]:>7.1f}" if ("xla", part) in figures else f"{'-':>7}"
    return f"{figures['recog', part]:>12.1f} / {xla}"


def main(argv):
    del argv
    cpu_kernels.DEPTHWISE_IMAGES_PER_BLOCK = _IMAGES_PER_BLOCK.value
    kernels = {"recog": cpu_kernels.depthwise_conv}
    if _XLA.value:
        kernels["xla"] = stock
    totals = {(name, part): 0.0 for name in kernels for part in PARTS}
    print(f"batch {_BATCH_SIZE.value}, ms (recog / XLA's grouped convolution):")
    print(f"{'layer':>26}" + "".join(f"{part:>22}" for part in PARTS))
    for side, channels, kernel, stride, count in lite0_layers():
        keys = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(keys[0], (_BATCH_SIZE.value, side, side, channels))
        w = jax.random.normal(keys[1], (kernel, kernel, 1, channels))
        padding = lax.padtype_to_pads((side, side), (kernel, kernel), (stride, stride), "SAME")
        out_side = -(-side // stride)
        out_grad = jax.random.normal(keys[2], (x.shape[0], out_side, out_side, channels))
        row = f"{side}x{side}x{channels} k{kernel} s{stride} x{count}"
        figures = {}
        for name, conv in kernels.items():
            conv = functools.partial(call, conv, (stride, stride), padding)
            for part, (program, args) in zip(PARTS, programs(conv, x, w, out_grad), strict=True):
                figures[name, part] = milliseconds(program, args)
                totals[name, part] += count * figures[name, part]
        cells = "".join(cell(figures, p) for p in PARTS)
        print(f"{row:>26}{cells}")
    cells = "".join(cell(totals, p) for p in PARTS)
    print(f"{'Lite0 in all':>26}{cells}")


if __name__ == "__main__":
    startup.restart_with_huge_pages()
    app.run(main)
