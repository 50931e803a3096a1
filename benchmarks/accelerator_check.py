"""Checks that recog's GPU or TPU path is the accelerator's own, run on the accelerator
(benchmarks/accelerator.sh runs it; on a CPU it checks the CPU path instead):

1. ResNet-50's train-mode gradient lowered for this platform holds XLA's own convolutions
   (forward, weight and input gradients: 53 + 53 + 52), reduce_window and select_and_scatter
   for its max pool, matmuls only in the classifier, and none of recog's CPU kernels
   (cpu_kernels.materialized's conditional tests isfinite).
2. It compiles and runs here, and its float32 gradients are within 1e-4 of a float64 reference
   computed on the CPU (median over 3 batches; benchmarks/exactness.py).

    python benchmarks/accelerator_check.py

Prints the op counts and the distances; exits 1 if a check fails.
"""

import collections
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from exactness import distances_to_float64
from flax import nnx

from recog.models import info

MODEL = "resnet50"
CONVOLUTIONS = 158


def lowered_train_gradient(name: str, platform: str) -> str:
    """The StableHLO of a train-mode parameter gradient of `name` on 2 32x32 images, lowered for
    `platform` (possible on any host: nothing is compiled)."""
    graphdef, params, rest = nnx.split(info.abstract_model(name, 10), nnx.Param, ...)

    def loss(params, rest, images):
        model = nnx.merge(graphdef, params, rest, copy=True)
        model.train()
        return model(images).sum()

    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    traced = jax.jit(jax.grad(loss)).trace(params, rest, images)
    return traced.lower(lowering_platforms=(platform,)).as_text()


def op_counts(stablehlo: str) -> collections.Counter:
    return collections.Counter(re.findall(r"stablehlo\.(\w+)", stablehlo))


def stock_program_problems(ops: collections.Counter) -> list[str]:
    """What in ResNet-50's gradient program is not the accelerators' stock ops (empty if none)."""
    expected = {"convolution": CONVOLUTIONS, "reduce_window": 1, "select_and_scatter": 1}
    problems = [f"{op}: {ops[op]}, expected {n}" for op, n in expected.items() if ops[op] != n]
    if ops["dot_general"] > 3:
        problems.append(f"dot_general: {ops['dot_general']}, expected at most 3 (the classifier)")
    if ops["is_finite"]:
        problems.append(f"is_finite: {ops['is_finite']}: cpu_kernels.materialized is in it")
    return problems


def main() -> int:
    device = jax.devices()[0]
    platform = jax.default_backend()
    print(f"{jax.device_count()} x {device.device_kind} ({platform}); jax {jax.__version__}")
    ops = op_counts(lowered_train_gradient(MODEL, "cuda" if platform == "gpu" else platform))
    shown = ("convolution", "reduce_window", "select_and_scatter", "dot_general", "is_finite")
    print(f"{MODEL} train-mode gradient lowered for {platform}:", {op: ops[op] for op in shown})
    problems = stock_program_problems(ops) if platform != "cpu" else []
    distances = distances_to_float64(MODEL, device)
    print(f"float32 gradients vs float64: {', '.join(f'{d:.1e}' for d in distances)}")
    if np.median(distances) >= 1e-4:
        problems.append(f"median distance {np.median(distances):.1e} >= 1e-4")
    for problem in problems:
        print(f"FAILED: {problem}")
    print("accelerator checks:", "failed" if problems else "passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
