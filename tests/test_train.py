"""The train step over a mesh: 8 simulated devices give what 1 device gives on the same batch."""

import jax
import numpy as np
import pytest

from recog import UserError, data, experiments, parallel
from recog.train.step import build_steps, evaluate


def run_steps(config, mesh, batches):
    steps = build_steps(config, num_classes=10, in_channels=1, mesh=mesh)
    state = steps.init()
    sharding = parallel.batch_sharding(mesh)
    for batch in batches:
        state, metrics = steps.train(state, parallel.to_global(batch, sharding))
    return jax.device_get(state), jax.device_get(metrics)


def test_eight_devices_match_one_device(digits_source):
    assert jax.device_count() == 8
    config = experiments.load("digits_cnn")
    stream = data.train_batches(
        digits_source, "train", global_batch_size=128, pipeline="pad_crop(1)", seed=0
    )
    batches = [next(stream) for _ in range(3)]
    state8, metrics8 = run_steps(config, parallel.make_mesh(), batches)
    state1, metrics1 = run_steps(config, parallel.make_mesh(jax.devices()[:1]), batches)
    assert int(state8["step"]) == int(state1["step"]) == 3
    np.testing.assert_allclose(metrics8["loss"], metrics1["loss"], rtol=1e-5)
    for part in ("params", "model_state"):  # model_state: BatchNorm's global-batch statistics
        leaves8 = jax.tree.leaves(state8[part])
        leaves1 = jax.tree.leaves(state1[part])
        assert len(leaves8) == len(leaves1) > 0
        for a, b in zip(leaves8, leaves1, strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_training_learns_and_evaluates_on_the_mesh(digits_source):
    config = experiments.load("digits_cnn", ["num_steps=40"])
    mesh = parallel.make_mesh()
    steps = build_steps(config, num_classes=10, in_channels=1, mesh=mesh)
    sharding = parallel.batch_sharding(mesh)
    state = steps.init()

    def eval_now():
        batches = data.eval_batches(digits_source, "test", global_batch_size=360, pipeline="")
        return evaluate(steps, state, (parallel.to_global(b, sharding) for b in batches))

    before = eval_now()
    stream = data.train_batches(digits_source, "train", global_batch_size=128, pipeline="", seed=0)
    for _ in range(40):
        state, _ = steps.train(state, parallel.to_global(next(stream), sharding))
    after = eval_now()
    assert before["num_examples"] == after["num_examples"] == 360
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.8


def test_batch_that_does_not_divide_over_devices_is_refused():
    with pytest.raises(UserError, match="config.batch_size=100 does not divide over the 8 devices"):
        parallel.check_batch_size("config.batch_size", 100, parallel.make_mesh())


def test_unknown_model_and_bad_model_option():
    mesh = parallel.make_mesh()
    config = experiments.load("digits_cnn", ["model.name=small_cn"])
    with pytest.raises(UserError, match="unknown model 'small_cn'; did you mean 'small_cnn'"):
        build_steps(config, 10, 1, mesh)
    config = experiments.load("digits_cnn")
    with config.unlocked():
        config.model.depth = 3
    with pytest.raises(UserError, match="model 'small_cnn' rejected config.model: .*depth"):
        build_steps(config, 10, 1, mesh)


def test_unknown_optimizer():
    config = experiments.load("digits_cnn", ["optimizer.name=adamww"])
    with pytest.raises(UserError, match="unknown optimizer 'adamww'; did you mean 'adamw'"):
        build_steps(config, 10, 1, parallel.make_mesh())
