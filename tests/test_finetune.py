"""Fine-tuning: config.init_from from PyTorch files in torchvision's layouts (logits equal to
PyTorch's) and from recog work directories, a new classifier for new classes, errors for what
does not fit, freezing and learning-rate factors."""

import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, checkpoint_vector, read_jsonl
from flax import nnx
from safetensors.numpy import save_file

from recog import TORCH_CONVERTERS, UserError, experiments, parallel, plugins
from recog.main import train
from recog.torch_weights import read_state_dict
from recog.train import init_from
from recog.train.optim import make_optimizer
from recog.train.step import build_steps, create_model

sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))

IMAGENET_CLASSES = [f"class{i}" for i in range(1000)]


def experiment(name: str, *overrides: str):
    config = experiments.load(name, overrides)
    with config.unlocked():
        config.init_from = ""
    return config


def one_device_state(config, num_classes: int, in_channels: int = 3):
    """The eval-mode graph and an abstract (params, model_state) on this process's first device."""
    model = nnx.eval_shape(lambda: create_model(config, num_classes, in_channels, config.seed))
    model.eval()
    graph, params, model_state = nnx.split(model, nnx.Param, ...)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def on_device(tree):
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), tree)

    return graph, {"params": on_device(params), "model_state": on_device(model_state)}


def load(config, source: str, abstract, class_names, in_channels: int = 3):
    with config.unlocked():
        config.init_from = str(source)
    return init_from.load_weights(config, abstract, class_names, in_channels)


def flat(state) -> dict[str, np.ndarray]:
    return {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


# --- PyTorch's logits ---------------------------------------------------------------------------


def torch_model(name: str):
    """A torchvision-layout model in eval mode with random weights, BatchNorm statistics,
    normalisation parameters and layer scales (so that a mix-up of any of them shows)."""
    import torch
    import torch_resnet
    import torchvision_layout

    builders = {
        "mobilenet_v2": torchvision_layout.MobileNetV2,
        "efficientnet_b0": torchvision_layout.EfficientNetB0,
        "convnext_tiny": torchvision_layout.convnext_tiny,
    }
    torch.manual_seed(0)
    model = builders.get(name, lambda classes: torch_resnet.resnet(name, classes))(1000).eval()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():  # views of the model's own tensors
            if key.endswith(("running_var", "layer_scale")) or (
                tensor.ndim == 1 and key.endswith("weight")
            ):
                tensor.uniform_(0.5, 1.5)
            elif tensor.ndim == 1 and tensor.is_floating_point():
                tensor.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize(
    ("name", "image_size"),
    [
        ("resnet18", 32),
        ("resnet50", 32),
        ("mobilenet_v2", 32),
        ("efficientnet_b0", 32),
        ("convnext_tiny", 32),
    ],
)
def test_torchvision_weights_give_pytorchs_logits(name, image_size, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch_file

    plugins.load_all([])
    model = torch_model(name)
    images = np.random.default_rng(0).random((2, image_size, image_size, 3), np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    state_dict = model.state_dict()
    torch.save(state_dict, tmp_path / "weights.pth")
    save_torch_file(state_dict, tmp_path / "weights.safetensors")

    config = experiment("cats_finetune", f"model.name={name}", "model.dtype=float32")
    graph, abstract = one_device_state(config, 1000)
    logits = jax.jit(lambda params, state, x: nnx.merge(graph, params, state)(x))
    # The ResNets load both files; for the plugin models both files' tensors are compared.
    formats = (".pth", ".safetensors") if name.startswith("resnet") else (".pth",)
    for suffix in formats:
        params, model_state = load(
            config, tmp_path / f"weights{suffix}", abstract, IMAGENET_CLASSES
        )
        distance = float(np.abs(np.asarray(logits(params, model_state, images)) - expected).max())
        print(f"{name} {suffix}: max |recog - PyTorch| = {distance:.2e}")
        assert distance < 1e-4, suffix
    pth, safetensors = (
        read_state_dict(str(tmp_path / f"weights{s}")) for s in (".pth", ".safetensors")
    )
    assert pth.keys() == safetensors.keys()
    assert all(np.array_equal(pth[key], safetensors[key]) for key in pth)


# --- Converters, the classifier, errors (small_cnn in a made-up PyTorch layout) -----------------


@pytest.fixture
def small_cnn_converter(monkeypatch):
    """small_cnn's PyTorch twin names its modules convs.I, norms.I and head, as a plugin's
    converter would say."""
    converter = lambda module: module.replace(".", "/")
    monkeypatch.setitem(TORCH_CONVERTERS._entries, "small_cnn", converter)


def small_cnn_state_dict(num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """What torch.save of small_cnn's twin with widths (8, 16) would hold, with random values."""
    rng = np.random.default_rng(seed)
    shapes = {}
    for index, (cin, cout) in enumerate([(1, 8), (8, 8), (8, 16), (16, 16)]):
        shapes[f"convs.{index}.weight"] = (cout, cin, 3, 3)
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"norms.{index}.{leaf}"] = (cout,)
    shapes |= {"head.weight": (num_classes, 16), "head.bias": (num_classes,)}
    state_dict = {k: rng.uniform(0.5, 1.5, shape).astype(np.float32) for k, shape in shapes.items()}
    return state_dict | {f"norms.{i}.num_batches_tracked": np.array(7) for i in range(4)}


def fresh_head(config, num_classes: int) -> np.ndarray:
    """The classifier a run from scratch starts with (jit leaves out the other tensors' draws)."""
    model = lambda: nnx.state(create_model(config, num_classes, 1, config.seed), nnx.Param)
    return np.asarray(jax.jit(lambda: model()["head"]["kernel"][...])())


def small_cnn_config():
    return experiment("digits_cnn", "model.widths=(8, 16)", "schedule.warmup_steps=0")


def test_a_new_classifier_where_the_class_count_differs(small_cnn_converter, tmp_path, caplog):
    config = small_cnn_config()
    state_dict = small_cnn_state_dict(num_classes=10)
    save_file(state_dict, tmp_path / "ten.safetensors")
    _, abstract = one_device_state(config, 3, in_channels=1)
    with caplog.at_level(logging.INFO):
        params, model_state = load(
            config, tmp_path / "ten.safetensors", abstract, ["a", "b", "c"], 1
        )
    assert "The classifier (head/bias, head/kernel) is re-initialised" in caplog.text
    loaded = flat(params) | flat(model_state)
    np.testing.assert_array_equal(
        loaded["convs/1/kernel"], state_dict["convs.1.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(loaded["norms/2/var"], state_dict["norms.2.running_var"])
    np.testing.assert_array_equal(loaded["norms/3/scale"], state_dict["norms.3.weight"])
    np.testing.assert_allclose(loaded["head/kernel"], fresh_head(config, 3), rtol=1e-6)
    assert loaded["head/kernel"].shape == (16, 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda sd: sd.pop("convs.1.weight"),
            "missing from the source: convs/1/kernel (3, 3, 8, 8)",
        ),
        (
            lambda sd: sd.update({"extra.weight": np.zeros((4, 4), np.float32)}),
            "not in the model: extra.weight (4, 4) (as extra/scale)",
        ),
        (
            lambda sd: sd.update({"convs.2.weight": np.zeros((16, 8, 5, 5), np.float32)}),
            "shapes that do not fit: convs.2.weight (16, 8, 5, 5) for convs/2/kernel (3, 3, 8, 16)",
        ),
    ],
)
def test_what_does_not_fit_is_an_error_naming_tensors_and_shapes(
    small_cnn_converter, tmp_path, change, message
):
    config = small_cnn_config()
    state_dict = small_cnn_state_dict(num_classes=10)
    change(state_dict)
    save_file(state_dict, tmp_path / "changed.safetensors")
    _, abstract = one_device_state(config, 10, in_channels=1)
    with pytest.raises(UserError, match="does not fit this run's small_cnn") as error:
        load(config, tmp_path / "changed.safetensors", abstract, list("0123456789"), 1)
    assert message in str(error.value)


def test_wrapped_checkpoints_and_files_that_are_not_weights(small_cnn_converter, tmp_path):
    config = small_cnn_config()
    _, abstract = one_device_state(config, 10, in_channels=1)
    classes = list("0123456789")
    (tmp_path / "noise.safetensors").write_bytes(b"\x01" * 64)
    with pytest.raises(UserError, match="is not a readable safetensors file"):
        load(config, tmp_path / "noise.safetensors", abstract, classes, 1)
    wide_resnet = experiment("cats_finetune", "model.name=wrn16_4")
    with pytest.raises(UserError, match="no PyTorch converter is registered for model 'wrn16_4'"):
        load(wide_resnet, tmp_path / "noise.safetensors", abstract, classes, 1)

    torch = pytest.importorskip("torch")
    (tmp_path / "noise.pth").write_bytes(b"\x01" * 64)
    with pytest.raises(UserError, match="is not a PyTorch state dict"):
        load(config, tmp_path / "noise.pth", abstract, classes, 1)
    state_dict = small_cnn_state_dict(num_classes=10)
    # a training script's checkpoint: {"state_dict": ...}, names prefixed by DataParallel
    wrapped = {f"module.{k}": torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}
    torch.save({"state_dict": wrapped, "epoch": 90}, tmp_path / "checkpoint.pt")
    params, _ = load(config, tmp_path / "checkpoint.pt", abstract, classes, 1)
    np.testing.assert_array_equal(flat(params)["head/bias"], state_dict["head.bias"])


# --- From a recog work directory -----------------------------------------------------------------


def test_init_from_a_work_directory_takes_only_the_weights(trained_workdir, caplog):
    workdir, _ = trained_workdir
    config = experiment("digits_cnn")
    classes = [str(i) for i in range(10)]
    steps = build_steps(config, 10, 1, parallel.make_mesh(jax.devices()[:1]))
    caplog.set_level(logging.INFO)
    state = steps.start(*load(config, f"{workdir}@30", steps.abstract_state, classes, 1))
    assert "The classifier is loaded too: the source was trained on the same classes" in caplog.text
    assert int(state["step"]) == 0
    for part in ("params", "model_state"):
        vector = np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(state[part])])
        np.testing.assert_array_equal(vector, checkpoint_vector(workdir, 30, (part,)))
    assert not any(np.any(leaf) for leaf in jax.tree.leaves(state["opt_state"]))  # SGD's, fresh

    renamed = load(config, str(workdir), steps.abstract_state, [f"digit {c}" for c in classes], 1)
    assert "The classifier (head/bias, head/kernel) is re-initialised" in caplog.text
    np.testing.assert_allclose(flat(renamed[0])["head/kernel"], fresh_head(config, 10), rtol=1e-6)
    with pytest.raises(UserError, match="has no checkpoint at step 45; its checkpoints are at"):
        load(config, f"{workdir}@45", steps.abstract_state, classes, 1)
    resnet = experiment("cats_finetune", "model.name=resnet18")
    with pytest.raises(UserError, match="holds weights of small_cnn, but this run's model is"):
        load(resnet, str(workdir), steps.abstract_state, classes, 1)


def test_named_weights_that_cannot_be_had_stop_the_run_first_and_every_experiment_takes_init_from(
    tmp_path, offline, monkeypatch
):
    monkeypatch.setenv("RECOG_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="could not download the weights resnet50:imagenet") as e:
        train(experiments.load("cats_finetune:resnet50"), str(tmp_path / "run"))
    assert str(tmp_path / "cache" / "weights" / "resnet50-11ad3fa6.pth") in str(e.value)
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="config.init_from: /nowhere/w.pth does not exist"):
        train(experiments.load("digits_cnn", ["init_from=/nowhere/w.pth"]), str(tmp_path / "run"))
    for name in experiments.available():
        config = experiments.load(name, ["init_from=/weights.safetensors", "freeze=head/.*"])
        assert (config.init_from, config.freeze) == ("/weights.safetensors", "head/.*"), name


# --- Freezing and learning-rate factors ----------------------------------------------------------


def test_a_run_from_a_work_directory_with_frozen_layers(trained_workdir, tmp_path, caplog):
    """recog.main end to end: the source's weights, the frozen ones (BatchNorm statistics too)
    unchanged after training, the log's summary; a rerun resumes without the source."""
    source, _ = trained_workdir
    workdir = tmp_path / "finetuned"
    overrides = [
        f"init_from={source}@30",
        "freeze=convs/[01]/.*|norms/[01]/.*",
        "lr_factors=(('head/.*', 0.5),)",
        "num_steps=2",
        "log_every=1",
        "eval_every=2",
        "checkpoint_every=2",
    ]
    caplog.set_level(logging.INFO)
    train(experiments.load("digits_cnn:quick", overrides), str(workdir))
    for line in (
        f"Initialised small_cnn from {source}@30: 14 parameter tensors and 8 tensors of BatchNorm",
        "Trainable parameters: 56,202 of 65,834",
        "Frozen (6 tensors, 9,632 parameters): convs/0, convs/1, norms/0, norms/1",
        "Learning rate x0.5 (2 tensors, 650 parameters): head",
    ):
        assert line in caplog.text
    assert next(m["step"] for m in read_jsonl(workdir / "metrics.jsonl")) == 1
    statistics = {f"norms/{i}/{s}": None for i in range(4) for s in ("mean", "var")}
    before, _ = init_from.workdir_tensors(f"{source}@30", "small_cnn", statistics)
    after, _ = init_from.workdir_tensors(str(workdir), "small_cnn", statistics)
    assert set(after) == set(before) and len(after) == 14 + 8
    for path in before:
        frozen = path.split("/")[1] in ("0", "1")
        assert np.array_equal(before[path].array, after[path].array) == frozen, path

    gone = experiments.load("digits_cnn:quick", ["init_from=/gone/weights.pth"])
    init_from.check(gone, str(workdir))  # resuming needs no source


def test_frozen_parameters_get_no_update_and_factors_scale_the_others():
    config = small_cnn_config()
    experiments.apply_overrides(config.unlock(), ["optimizer.weight_decay=0.001"])
    _, abstract = one_device_state(config, 10, in_channels=1)
    params = jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype), abstract["params"])
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)

    def first_update(*overrides):
        experiments.apply_overrides(config, overrides)
        optimizer, _ = make_optimizer(config)
        updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
        return flat(updates)

    plain = first_update()
    updates = first_update("freeze=convs/0/.*", "lr_factors=(('head/.*', 0.25),)")
    for path, update in updates.items():
        factor = {"convs/0/kernel": 0.0, "head/kernel": 0.25, "head/bias": 0.25}.get(path, 1.0)
        np.testing.assert_allclose(update, factor * plain[path], rtol=1e-6, err_msg=path)
    assert plain["convs/0/kernel"].any()


def test_patterns_that_match_nothing_are_errors():
    config = small_cnn_config()
    experiments.apply_overrides(config.unlock(), ["freeze=stem_.*"])
    with pytest.raises(UserError, match="'stem_.\\*' .* matches no parameter; .* convs/0/kernel"):
        build_steps(config, 10, 1, parallel.make_mesh(jax.devices()[:1]))
