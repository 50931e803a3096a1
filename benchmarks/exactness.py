"""How far a model's train-mode gradients are from a float64 reference, on a device.

Used by tests/test_exactness.py (recog's CPU settings) and benchmarks/accelerator_check.py (a
GPU or TPU). The distance is the L2 norm of the difference over all parameter gradients,
relative to the reference's, for batches of 8 random 64x64 images: a ReLU or max-pool input
within float32 rounding of its kink flips that element's derivative in any float32
implementation and moves one batch's distance to about 2e-3 whatever the kernels, so callers
take the median over batches.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from recog import MODELS
from recog.train.step import full_float32_precision


def train_mode_gradients(name: str, dtype: str, device: jax.Device, batches: int) -> list:
    """Parameter gradients of the cross-entropy in train mode (BatchNorm on batch statistics),
    as `name` is initialised for training, computed in `dtype` on `device`, one flat float64
    vector per batch."""
    model = MODELS.get(name)(num_classes=10, in_channels=3, dtype=dtype, rngs=nnx.Rngs(0))
    if dtype == "float32":
        full_float32_precision(model)  # as recog builds float32 models (a no-op on the CPU)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = jax.device_put(jax.tree.map(lambda x: x.astype(dtype), (params, rest)), device)

    def loss(params, images, labels):
        model = nnx.merge(graphdef, params, rest, copy=True)
        model.train()
        logits = model(images).astype(dtype)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    gradient = jax.jit(jax.grad(loss))
    flat = []
    for seed in range(batches):
        rng = np.random.default_rng(seed)
        images = jax.device_put(jnp.asarray(rng.normal(size=(8, 64, 64, 3)), dtype), device)
        labels = jax.device_put(jnp.asarray(rng.integers(0, 10, 8)), device)
        leaves = jax.tree.leaves(gradient(params, images, labels))
        flat.append(np.concatenate([np.asarray(leaf, np.float64).ravel() for leaf in leaves]))
    return flat


def distances_to_float64(name: str, device: jax.Device, batches: int = 3) -> list[float]:
    """The float32 gradients' distance on `device` to float64 ones computed on the CPU."""
    approximate = train_mode_gradients(name, "float32", device, batches)
    with jax.enable_x64(True):
        reference = train_mode_gradients(name, "float64", jax.devices("cpu")[0], batches)
    return [
        float(np.linalg.norm(ours - exact) / np.linalg.norm(exact))
        for ours, exact in zip(approximate, reference, strict=True)
    ]
