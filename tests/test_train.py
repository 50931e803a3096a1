"""The train step over a mesh: 8 simulated devices give what 1 device gives on the same batch."""

import jax
import numpy as np
import pytest

from recog import UserError, data, experiments, parallel
from recog.train import evaluation
from recog.train.step import build_steps, check_accumulation


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
        global_batches = (parallel.to_global(b, sharding) for b in batches)
        return evaluation.evaluate(steps.eval, state, global_batches, digits_source.class_names)

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


def leaves_close(a, b, rtol=2e-5, atol=2e-6):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def digits_batches(source, n, batch_size=128):
    stream = data.train_batches(source, "train", global_batch_size=batch_size, pipeline="", seed=0)
    return [next(stream) for _ in range(n)]


def test_gradient_accumulation_matches_one_large_batch(digits_source):
    # Without BatchNorm an example's gradient does not depend on its micro-batch.
    def config(*overrides):
        config = experiments.load("digits_cnn", ["optimizer.weight_decay=0", *overrides])
        with config.unlocked():
            config.model.batch_norm = False
        return config

    batches = digits_batches(digits_source, 2)
    mesh = parallel.make_mesh()
    large, _ = run_steps(config(), mesh, batches)
    accumulated, _ = run_steps(config("grad_accum_steps=4"), mesh, batches)
    leaves_close(large["params"], accumulated["params"])
    leaves_close(large["opt_state"], accumulated["opt_state"])


def test_accumulation_that_does_not_divide_is_refused():
    config = experiments.load("digits_cnn", ["grad_accum_steps=32"])  # 128 / 32 = 4 < 8 devices
    with pytest.raises(UserError, match="grad_accum_steps=32 micro-batches that each divide"):
        check_accumulation(config, parallel.make_mesh())


def test_ema_of_weights_is_kept_and_evaluated(digits_source):
    config = experiments.load("digits_cnn", ["ema_decay=0.75"])
    mesh = parallel.make_mesh()
    steps = build_steps(config, num_classes=10, in_channels=1, mesh=mesh)
    sharding = parallel.batch_sharding(mesh)
    state = steps.init()
    initial = jax.device_get(state["params"])
    for batch in digits_batches(digits_source, 2):
        state, _ = steps.train(state, parallel.to_global(batch, sharding))
        if int(state["step"]) == 1:
            after_one = jax.device_get(state["params"])
    expected = jax.tree.map(lambda p0, p1: 0.75 * p0 + 0.25 * p1, initial, after_one)
    expected = jax.tree.map(
        lambda e, p2: 0.75 * e + 0.25 * p2, expected, jax.device_get(state["params"])
    )
    leaves_close(jax.device_get(state["ema_params"]), expected)

    def batches():
        stream = data.eval_batches(digits_source, "test", global_batch_size=360, pipeline="")
        return (parallel.to_global(b, sharding) for b in stream)

    results = evaluation.evaluate_weights(steps, state, batches, digits_source.class_names)
    assert {"accuracy", "ema_accuracy", "ema_loss"} <= set(results)
    assert results["ema_loss"] != results["loss"]


def test_fsdp_matches_replicated_and_really_shards(digits_source):
    batches = digits_batches(digits_source, 3)
    mesh = parallel.make_mesh()
    replicated, _ = run_steps(experiments.load("digits_cnn"), mesh, batches)
    fsdp_config = experiments.load("digits_cnn", ["sharding=fsdp"])
    fsdp, _ = run_steps(fsdp_config, mesh, batches)
    leaves_close(replicated["params"], fsdp["params"])
    leaves_close(replicated["model_state"], fsdp["model_state"])
    steps = build_steps(fsdp_config, 10, 1, mesh)
    specs = [leaf.sharding.spec for leaf in jax.tree.leaves(steps.abstract_state["params"])]
    assert any(parallel.DATA_AXIS in spec for spec in specs)
    state = steps.init()
    kernel = next(leaf for leaf in jax.tree.leaves(state["params"]) if leaf.shape == (3, 3, 32, 64))
    assert kernel.addressable_shards[0].data.shape == (3, 3, 32, 8)  # 64 channels over 8 devices


def test_mixup_is_applied_on_device_and_deterministic(digits_source):
    config = experiments.load("digits_cnn", ["data.batch_pipeline=mixup(0.4)|cutmix(1.0)"])
    mesh = parallel.make_mesh()
    batches = digits_batches(digits_source, 2)
    first, metrics = run_steps(config, mesh, batches)
    again, _ = run_steps(config, mesh, batches)
    _, plain_metrics = run_steps(experiments.load("digits_cnn"), mesh, batches)
    leaves_close(first["params"], again["params"], rtol=0, atol=0)
    assert not np.isclose(metrics["loss"], plain_metrics["loss"])
