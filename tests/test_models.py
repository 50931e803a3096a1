"""Every registered model, the built-ins and the repository's plugins: output shapes, what train
and eval mode do, parameter counts against the published figures, bfloat16 compute; and a model
plugin from outside the repository trained by the real binary.

Most checks read the traced forward pass (a jaxpr: no weights, no compilation), which costs well
under a second per model, so they cover every model. Tracing train mode and running a model
cost more (seconds each on CPU for the deep ones), so those checks take one model per
architecture: the smallest with the same model class and module types (resnet18 stands for
resnet34, resnet50 for resnet101 to 200).
"""

import json
import re
import sys
import textwrap

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, run_binary
from flax import nnx
from jax import lax

from recog import MODELS, plugins
from recog.experiments import load
from recog.models import cpu_kernels, info
from recog.train.step import create_model

sys.path.insert(0, str(REPO / "benchmarks"))
import accelerator_check

plugins.load_repo_folder()
MODEL_NAMES = MODELS.names()
NUM_CLASSES = 10
IMAGES = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
RANDOM_PRIMITIVES = {"random_bits", "random_seed", "random_wrap", "random_fold_in", "random_split"}

# Parameters at 1000 classes (WRN: 10), as published: torchvision for ResNets (v1.5 has the
# same count as v1), ConvNeXt, MobileNetV2 and EfficientNet; the WRN paper for WRN-28-10.
PUBLISHED_PARAMS = {
    "resnet18": (11.69e6, 1000),
    "resnet34": (21.80e6, 1000),
    "resnet50": (25.56e6, 1000),
    "resnet101": (44.55e6, 1000),
    "resnet152": (60.19e6, 1000),
    "resnet200": (64.67e6, 1000),
    "convnext_tiny": (28.59e6, 1000),
    "convnext_small": (50.22e6, 1000),
    "mobilenet_v2": (3.50e6, 1000),
    "efficientnet_b0": (5.29e6, 1000),
    "wrn28_10": (36.5e6, 10),
}


def forward_jaxpr(name: str, *, train: bool, **config) -> jax.extend.core.ClosedJaxpr:
    """The traced forward pass of `name` on IMAGES; returns (logits, BatchNorm statistics)."""
    graphdef, state = nnx.split(info.abstract_model(name, NUM_CLASSES, **config))

    def forward(state, images):
        model = nnx.merge(graphdef, state)
        model.train() if train else model.eval()
        return model(images), nnx.state(model, nnx.BatchStat)

    return jax.make_jaxpr(forward)(state, IMAGES)


def equations(jaxpr: jax.extend.core.Jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from equations(sub)


def primitive_names(closed: jax.extend.core.ClosedJaxpr) -> set[str]:
    return {eqn.primitive.name for eqn in equations(closed.jaxpr)}


def batch_stat_outputs(closed: jax.extend.core.ClosedJaxpr) -> list:
    return closed.jaxpr.outvars[1:]


def architecture(name: str) -> tuple:
    model = info.abstract_model(name, NUM_CLASSES)
    return type(model), frozenset(type(node) for _, node in nnx.iter_graph(model))


def representatives() -> list[str]:
    """The model with the fewest parameters of each architecture (class and module types)."""
    smallest = {}
    for name in MODEL_NAMES:
        size = info.param_count(name, NUM_CLASSES)
        key = architecture(name)
        if key not in smallest or size < smallest[key][0]:
            smallest[key] = (size, name)
    return sorted(name for _, name in smallest.values())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_eval_mode_is_deterministic_and_leaves_batch_stats(name):
    closed = forward_jaxpr(name, train=False)
    assert closed.out_avals[0].shape == (2, NUM_CLASSES)
    assert closed.out_avals[0].dtype == jnp.float32
    assert not primitive_names(closed) & RANDOM_PRIMITIVES  # no dropout or stochastic depth
    inputs = set(closed.jaxpr.invars)
    assert all(var in inputs for var in batch_stat_outputs(closed))  # returned untouched


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bfloat16_computes_in_bfloat16_with_float32_state(name):
    model = info.abstract_model(name, NUM_CLASSES, dtype="bfloat16")
    state = jax.tree.leaves(nnx.state(model, nnx.Param)) + jax.tree.leaves(
        nnx.state(model, nnx.BatchStat)
    )
    assert all(leaf.dtype == jnp.float32 for leaf in state)
    closed = forward_jaxpr(name, train=False, dtype="bfloat16")
    assert closed.out_avals[0].dtype == jnp.float32
    heavy = [
        eqn
        for eqn in equations(closed.jaxpr)
        if eqn.primitive.name in ("conv_general_dilated", "dot_general")
    ]
    assert heavy and all(eqn.invars[0].aval.dtype == jnp.bfloat16 for eqn in heavy)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("convnext_tiny", {"drop_path_rate": 0.1}),
        ("efficientnet_b0", {"drop_path_rate": 0.2, "dropout_rate": 0.2}),
        ("mobilenet_v2", {"dropout_rate": 0.2}),
        ("wrn16_4", {"dropout_rate": 0.3}),
    ],
)
def test_dropout_and_stochastic_depth_follow_config_and_train_mode(name, config):
    assert primitive_names(forward_jaxpr(name, train=True, **config)) & RANDOM_PRIMITIVES
    assert not primitive_names(forward_jaxpr(name, train=False, **config)) & RANDOM_PRIMITIVES
    off = {key: 0.0 for key in config}
    assert not primitive_names(forward_jaxpr(name, train=True, **off)) & RANDOM_PRIMITIVES


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_count_matches_published(name):
    published, num_classes = PUBLISHED_PARAMS[name]
    assert info.param_count(name, num_classes) == pytest.approx(published, rel=0.005)


def test_gflops_count_a_multiply_add_as_two():
    assert info.gflops("resnet50") == pytest.approx(2 * 4.1, rel=0.05)  # 4.1 GMACs published


@pytest.mark.parametrize("name", representatives())
def test_train_mode_updates_every_batch_stat(name):
    closed = forward_jaxpr(name, train=True)
    inputs = set(closed.jaxpr.invars)
    assert not any(var in inputs for var in batch_stat_outputs(closed))


def synthetic_state(abstract_state: nnx.State) -> nnx.State:
    """Arrays for an abstract state without running the model's initialisers, each of which
    would cost an XLA compilation: matrices and kernels ~ N(0, 1 / fan-in); vectors (norm scales,
    biases, BatchNorm statistics) ~ U(0.5, 1.5), which keeps variances positive; zero RNG keys."""
    rng = np.random.default_rng(0)

    def fill(leaf):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(np.zeros((*leaf.shape, 2), np.uint32))
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            return np.zeros(leaf.shape, leaf.dtype)
        if len(leaf.shape) < 2:
            return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
        fan_in = np.prod(leaf.shape[:-1])
        return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

    return jax.tree.map(fill, abstract_state)


@pytest.mark.parametrize("name", representatives())
def test_bfloat16_forward_is_close_to_float32(name):
    graphdef, abstract_state = nnx.split(info.abstract_model(name, NUM_CLASSES))
    bfloat16_graphdef, _ = nnx.split(info.abstract_model(name, NUM_CLASSES, dtype="bfloat16"))

    @jax.jit
    def logits(state, images):
        def run(graph):
            model = nnx.merge(graph, state)
            model.eval()
            return model(images)

        return run(graphdef), run(bfloat16_graphdef)

    images = np.random.default_rng(1).standard_normal(IMAGES.shape, np.float32)
    float32_logits, bfloat16_logits = logits(synthetic_state(abstract_state), images)
    assert bfloat16_logits.dtype == jnp.float32 and np.isfinite(float32_logits).all()
    scale = float(jnp.abs(float32_logits).max())
    np.testing.assert_allclose(bfloat16_logits, float32_logits, rtol=0, atol=0.05 * scale)


PLUGIN = '''
"""A user's model plugin, kept outside the repository."""

import jax.numpy as jnp
from flax import nnx

from recog import MODELS


class TinyNet(nnx.Module):
    def __init__(self, num_classes, *, in_channels, widths, dtype, rngs):
        self.dtype = jnp.dtype(dtype)
        self.conv = nnx.Conv(in_channels, widths[0], (3, 3), dtype=self.dtype, rngs=rngs)
        self.head = nnx.Linear(widths[0], num_classes, dtype=self.dtype, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.conv(x.astype(self.dtype)))
        return self.head(x.mean(axis=(1, 2))).astype(jnp.float32)


@MODELS.register("tiny_plugin_net")
def tiny_plugin_net(num_classes, *, in_channels, rngs, widths=(16,), dtype="float32"):
    """One conv layer and a linear classifier."""
    return TinyNet(num_classes, in_channels=in_channels, widths=widths, dtype=dtype, rngs=rngs)
'''


@pytest.mark.parametrize(
    ("batch", "size", "kernel", "strides", "padding"),
    [
        (3, 7, (3, 3), (1, 1), ((1, 1), (1, 1))),
        (2, 9, (5, 5), (2, 2), ((1, 2), (1, 2))),
        (1, 8, (1, 1), (2, 2), ((0, 0), (0, 0))),
        (3, 10, (3, 5), (3, 2), ((2, 1), (0, 3))),
        (2, 5, (3, 3), (2, 2), ((0, 0), (2, 0))),
    ],
)
def test_depthwise_conv_equals_xla_grouped_conv(batch, size, kernel, strides, padding):
    """recog's depthwise kernel (tap sums forward, written-out gradients backward) against XLA's
    grouped convolution: values, both gradients, each gradient alone (the other argument's
    tangent a symbolic zero), and forward mode; odd batches, strides above the kernel's
    size, asymmetric padding."""
    images = jax.random.normal(jax.random.key(1), (batch, size, size, 6))
    weights = jax.random.normal(jax.random.key(2), (*kernel, 1, 6))

    def ours(x, w):
        return cpu_kernels.depthwise_conv(x, w, strides, padding)

    def xla(x, w):
        return lax.conv_general_dilated(
            x,
            w,
            strides,
            padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=6,
        )

    np.testing.assert_allclose(ours(images, weights), xla(images, weights), rtol=1e-5, atol=1e-5)
    for argnums in ((0, 1), 0, 1):
        got, want = (
            jax.jit(jax.grad(lambda x, w, conv=conv: (conv(x, w) ** 2).sum(), argnums))(
                images, weights
            )
            for conv in (ours, xla)
        )
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)
    tangents = (jnp.cos(images), jnp.sin(weights))
    np.testing.assert_allclose(
        jax.jvp(ours, (images, weights), tangents)[1],
        jax.jvp(xla, (images, weights), tangents)[1],
        atol=1e-4,
    )


@pytest.mark.parametrize(
    ("size", "kernel", "stride"),
    [
        (2, 3, 1),
        (1, 3, 1),
        (2, 3, 2),
        (4, 7, 2),
        (3, 3, 1),
        (8, 3, 2),
        (1, 1, 1),
        (8, 1, 1),
        (7, 1, 2),
    ],
)
def test_conv_as_a_matmul_equals_xla_conv(size, kernel, stride):
    """On the CPU, 1x1 convolutions and those of inputs smaller than the kernel run as one matmul
    (XLA's CPU conv is slow there); the values and derivatives, forward and reverse, must stay
    those of lax.conv_general_dilated."""
    images = jax.random.normal(jax.random.key(1), (4, size, size, 8))
    kernel_weights = jax.random.normal(jax.random.key(2), (kernel, kernel, 8, 16)) * 0.1
    numbers = lax.conv_dimension_numbers(
        images.shape, kernel_weights.shape, ("NHWC", "HWIO", "NHWC")
    )
    padding = [(kernel // 2, kernel // 2)] * 2

    def ours(x, w):
        return cpu_kernels.conv_general_dilated(
            x, w, (stride, stride), padding, dimension_numbers=numbers
        )

    def xla(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=numbers)

    convolutions = str(jax.make_jaxpr(ours)(images, kernel_weights)).count("conv_general_dilated")
    assert convolutions == (0 if size < kernel or kernel == 1 else 1)  # matmuls where XLA is slow
    np.testing.assert_allclose(ours(images, kernel_weights), xla(images, kernel_weights), atol=1e-5)
    tangents = (jnp.cos(images), jnp.sin(kernel_weights))
    np.testing.assert_allclose(
        jax.jvp(ours, (images, kernel_weights), tangents)[1],
        jax.jvp(xla, (images, kernel_weights), tangents)[1],
        atol=1e-4,
    )

    def loss(conv, x, w):
        return (conv(x, w) ** 2).sum()

    ours_grads = jax.grad(lambda *a: loss(ours, *a), argnums=(0, 1))(images, kernel_weights)
    xla_grads = jax.grad(lambda *a: loss(xla, *a), argnums=(0, 1))(images, kernel_weights)
    np.testing.assert_allclose(ours_grads[0], xla_grads[0], atol=1e-4)
    np.testing.assert_allclose(ours_grads[1], xla_grads[1], rtol=1e-5, atol=1e-3)


def test_model_plugin_outside_the_repo_trains(tmp_path):
    path = tmp_path / "my_models" / "tiny_net.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(PLUGIN))
    workdir = tmp_path / "workdir"
    result = run_binary(
        "main",
        "--experiment=digits_cnn",
        f"--plugins={path}",
        "--config.model.name=tiny_plugin_net",
        "--config.num_steps=5",
        "--config.log_every=5",
        "--config.eval_every=5",
        "--config.checkpoint_every=5",
        f"--workdir={workdir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["name"] == "tiny_plugin_net" and config["plugins"] == [str(path)]
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in m and m["step"] == 5 for m in lines)
    assert any("eval/accuracy" in m and m["step"] == 5 for m in lines)


@pytest.mark.parametrize(
    ("shape", "window", "strides", "padding", "dtype"),
    [
        ((2, 9, 8, 3), (3, 3), (2, 2), ((1, 1), (1, 1)), jnp.float32),  # ResNet's stem pool
        ((2, 8, 8, 4), (2, 2), (2, 2), ((0, 0), (0, 0)), jnp.float32),  # small_cnn's
        ((1, 7, 6, 2), (3, 2), (1, 2), ((1, 0), (0, 1)), jnp.float32),
        ((2, 8, 8, 4), (3, 3), (2, 2), ((1, 1), (1, 1)), jnp.bfloat16),
    ],
)
def test_max_pool_equals_nnx_max_pool_and_its_derivatives(shape, window, strides, padding, dtype):
    """The CPU's max pooling has its own derivative rule (JAX's gradient is slow on XLA's CPU
    backend); it must send each window's gradient to the same input as JAX's, and take its
    tangent from there, ties included (ReLU outputs tie at zero all the time)."""
    x = nnx.relu(jax.random.normal(jax.random.key(0), shape)).astype(dtype)
    x = x.at[0, 0, :2].set(1.0)  # a tie at a positive value, inside overlapping windows

    def reference(x):
        return nnx.max_pool(x, window, strides=strides, padding=padding)

    def ours(x):
        return cpu_kernels.max_pool(x, window, strides, padding)

    pooled = reference(x)
    grad = jax.random.normal(jax.random.key(1), pooled.shape).astype(dtype)
    tangent = jax.random.normal(jax.random.key(2), x.shape).astype(dtype)
    atol = 1e-6 if dtype == jnp.float32 else 1e-2
    np.testing.assert_array_equal(ours(x), pooled)
    np.testing.assert_allclose(
        jax.vjp(ours, x)[1](grad)[0].astype(jnp.float32),
        jax.vjp(reference, x)[1](grad)[0].astype(jnp.float32),
        atol=atol,
    )
    np.testing.assert_allclose(
        jax.jvp(ours, (x,), (tangent,))[1].astype(jnp.float32),
        jax.jvp(reference, (x,), (tangent,))[1].astype(jnp.float32),
        atol=atol,
    )


@pytest.mark.parametrize("first", [1.0, jnp.nan, jnp.inf])
def test_materialized_is_the_identity_with_the_identity_derivatives(first):
    x = jnp.arange(6.0).reshape(2, 3).at[0, 0].set(first)
    weights = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(jax.jit(cpu_kernels.materialized)(x), x)
    grad = jax.grad(lambda x: jnp.sum(cpu_kernels.materialized(x) * weights))
    np.testing.assert_array_equal(grad(jnp.ones((2, 3))), weights)
    np.testing.assert_array_equal(jax.jvp(cpu_kernels.materialized, (x,), (weights,))[1], weights)


@pytest.mark.parametrize("name", representatives())
def test_forward_mode_differentiation_traces(name):
    """jax.jvp through the train-mode forward pass of every architecture: the CPU kernels'
    derivative rules support forward mode (a custom_vjp would raise here)."""
    graphdef, state = nnx.split(info.abstract_model(name, NUM_CLASSES))

    def logits(state, images):
        model = nnx.merge(graphdef, state, copy=True)
        model.train()
        return model(images)

    def tangent(state, images):
        return jax.jvp(lambda x: logits(state, x), (images,), (jnp.ones_like(images),))[1]

    assert jax.make_jaxpr(tangent)(state, IMAGES).out_avals[0].shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_forward_and_reverse_mode_agree(name):
    """<jvp(v), u> == <v, vjp(u)> through a train-mode model, with recog's CPU kernels in both;
    and jax.jacfwd (jvp under vmap) runs."""
    model = MODELS.get(name)(num_classes=NUM_CLASSES, in_channels=3, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    images = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    v = jax.random.normal(jax.random.key(1), images.shape)
    u = jax.random.normal(jax.random.key(2), (4, NUM_CLASSES))

    def logits(x):
        model = nnx.merge(graphdef, state, copy=True)
        model.train()
        return model(x)

    @jax.jit
    def both_ways(images, v, u):
        forward = jnp.vdot(jax.jvp(logits, (images,), (v,))[1], u)
        reverse = jnp.vdot(v, jax.vjp(logits, images)[1](u)[0])
        return forward, reverse, jax.jacfwd(lambda scale: logits(scale * images))(1.0)

    forward, reverse, jacobian = both_ways(images, v, u)
    np.testing.assert_allclose(forward, reverse, rtol=2e-3)  # BatchNorm over a few images
    assert jacobian.shape == (4, NUM_CLASSES) and np.isfinite(jacobian).all()


@pytest.mark.parametrize("platform", ["cuda", "tpu", "cpu"])
def test_accelerator_programs_hold_stock_ops_only(platform):
    """ResNet-50's train-mode gradient lowered for a GPU or TPU holds XLA's own convolutions and
    max pooling, and none of recog's CPU kernels (benchmarks/accelerator_check.py checks the same
    on the accelerator itself). Lowered for the CPU, the same program holds them all."""
    ops = accelerator_check.op_counts(
        accelerator_check.lowered_train_gradient("resnet50", platform)
    )
    if platform == "cpu":
        assert ops["dot_general"] > 100 and ops["is_finite"] > 50
        assert not ops["reduce_window"] and not ops["select_and_scatter"]
    else:
        assert accelerator_check.stock_program_problems(ops) == []


@pytest.mark.parametrize(
    ("dtype", "precisions"), [("float32", {"HIGHEST"}), ("bfloat16", {"DEFAULT"})]
)
def test_float32_models_multiply_in_full_float32_on_accelerators(dtype, precisions):
    """XLA's default precision is one bfloat16 pass on TPUs (TF32 on recent GPUs): a model built
    for training or inference at float32 asks for full float32 in every convolution and matmul,
    its gradients included."""
    config = load("digits_cnn", [f"model.dtype={dtype}"])
    graphdef, state = nnx.split(create_model(config, NUM_CLASSES, 1, seed=0))

    def loss(state, images):
        model = nnx.merge(graphdef, state, copy=True)
        model.train()
        return model(images).sum()

    images = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    text = jax.jit(jax.grad(loss)).trace(state, images).lower(lowering_platforms=("tpu",)).as_text()
    assert set(re.findall(r"precision (\w+)", text)) == precisions
