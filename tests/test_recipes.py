"""The reference-recipe experiments: their configs say what their docstrings say, and each trains
and evaluates for a few steps through the trainer on TFDS's own builder with mocked data."""

import json
import math

import pytest
from conftest import read_jsonl
from tfds_mocking import mocked_tfds

from recog import experiments
from recog.main import train

FEW_STEPS = [
    "batch_size=8",
    "eval_batch_size=8",
    "num_steps=2",
    "log_every=1",
    "eval_every=2",
    "checkpoint_every=2",
]


def train_on_mocked_data(config, tmp_path, splits) -> tuple[dict, list[dict]]:
    """Trains `config` on 16 mocked examples a split; (dataset.json, train metric lines)."""
    tfds_name = config.data.name.removeprefix("tfds:")
    with mocked_tfds(tfds_name, tmp_path / "tfds", splits, examples=16):
        eval_metrics = train(config, str(tmp_path / "run"))
    assert eval_metrics["num_examples"] == 16
    dataset = json.loads((tmp_path / "run" / "dataset.json").read_text())
    logged = [m for m in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "train/loss" in m]
    assert [m["step"] for m in logged] == [1, 2]
    assert all(math.isfinite(m["train/loss"]) for m in logged)
    return dataset, logged


def test_imagenet_resnet_is_the_flax_example_recipe(tmp_path):
    config = experiments.load("imagenet_resnet")
    experiments.resolve_epochs(config, 1_281_167)  # ImageNet's training images
    steps_per_epoch = 1_281_167 // 1024
    assert config.data.name == "tfds:imagenet2012:5.*.*"
    assert (config.model.name, config.model.dtype) == ("resnet50", "bfloat16")
    # 100 epochs; the Flax example counts 100 * 1,251 = 125,100 (whole batches per epoch).
    assert config.batch_size == 1024 and config.num_steps == 100 * 1_281_167 // 1024 == 125_113
    assert config.optimizer.lr == 0.1 * 1024 / 256 and config.optimizer.nesterov
    assert config.optimizer.weight_decay == 1e-4 and config.label_smoothing == 0.0
    assert config.schedule.warmup_steps == 5 * steps_per_epoch

    # ResNet-50 at width 8 on 32 px crops: the recipe's model and pipelines, small enough here.
    small = experiments.load(
        "imagenet_resnet",
        [
            *FEW_STEPS,
            "model.width=8",
            "schedule.warmup_steps=1",
            "data.train_pipeline=inception_crop(32, method='bicubic', antialias=False)|flip_lr",
            "data.eval_pipeline=resize_small(36)|center_crop(32)",
        ],
    )
    dataset, logged = train_on_mocked_data(small, tmp_path, ["train", "validation"])
    assert len(dataset["class_names"]) == 1000 and dataset["class_names"][0] == "n01440764"
    assert dataset["image_shape"] == [None, None, 3]
    # Warmed up to the recipe's 0.1 x batch / 256, which follows the overridden batch of 8.
    assert logged[-1]["train/learning_rate"] == pytest.approx(0.1 * 8 / 256)


def test_cifar10_resnet_is_the_wide_resnet_recipe(tmp_path):
    config = experiments.load("cifar10_resnet")
    experiments.resolve_epochs(config, 50_000)
    assert config.data.name == "tfds:cifar10" and config.data.eval_split == "test"
    assert (config.model.name, config.model.dropout_rate) == ("wrn28_10", 0.3)
    assert config.batch_size == 128 and config.num_steps == 200 * 50_000 // 128
    assert config.eval_every == config.checkpoint_every == 5 * 50_000 // 128
    assert config.optimizer.lr == 0.1 and config.optimizer.nesterov
    assert config.optimizer.weight_decay == 5e-4
    assert config.data.train_pipeline == "pad_crop(4)|flip_lr"

    # WRN-16-4 (the same WideResNet, 2.7M parameters instead of 36.5M) on 8 px images: 8
    # simulated devices each update a replica of the weights, which for WRN-28-10 takes seconds.
    small = experiments.load(
        "cifar10_resnet",
        [
            *FEW_STEPS,
            "model.name=wrn16_4",
            "data.train_pipeline=resize(8)|pad_crop(1)|flip_lr",
            "data.eval_pipeline=resize(8)",
        ],
    )
    dataset, logged = train_on_mocked_data(small, tmp_path, ["train", "test"])
    assert len(dataset["class_names"]) == 10  # named from the download; mocked: "0" to "9"
    assert dataset["image_shape"] == [32, 32, 3]
    assert logged[0]["train/learning_rate"] == pytest.approx(0.1)  # no warm-up
