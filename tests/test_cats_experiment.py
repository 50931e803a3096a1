"""The flagship experiment end to end on a small folder of photos the test makes."""

import json

import numpy as np
from conftest import read_jsonl, run_binary
from PIL import Image

from recog import experiments


def test_both_variants_load():
    default = experiments.load("cats_resnet")
    assert default.model.name == "resnet50" and default.data.name == "cats_vs_dogs"
    cpu = experiments.load("cats_resnet:cpu", ["data.dir=/photos"])
    assert cpu.data.dir == "/photos" and cpu.model.width == 32


def test_the_learning_rate_follows_the_batch_size_and_steps_the_data():
    default = experiments.load("cats_resnet")
    halved = experiments.load("cats_resnet", ["batch_size=128"])
    assert halved.optimizer.lr == default.optimizer.lr / 2  # the linear scaling rule
    # A value set on its own wins, whichever order the overrides come in.
    for overrides in (
        ["optimizer.lr=0.3", "batch_size=128"],
        ["batch_size=128", "optimizer.lr=0.3"],
    ):
        assert experiments.load("cats_resnet", overrides).optimizer.lr == 0.3
    saved = json.loads(experiments.to_json(halved))
    assert saved["optimizer"]["lr"] == halved.optimizer.lr
    # Epochs become steps against the training split's size when the run starts (2,000 photos:
    # ../shared/data/cats_dogs; 18,610: TFDS's train[:80%]).
    for spec, photos, steps, warmup, every in (
        ("cats_resnet", 18_610, 40 * 18_610 // 256, 2 * 18_610 // 256, 500),
        ("cats_resnet:cpu", 2_000, 85 * 2_000 // 64, 2 * 2_000 // 64, 5 * 2_000 // 64),
        ("cats_resnet:robust_cpu", 2_000, 84 * 2_000 // 64, 2 * 2_000 // 64, 21 * 2_000 // 64),
    ):
        config = experiments.load(spec)
        experiments.resolve_epochs(config, photos)
        assert (config.num_steps, config.schedule.warmup_steps) == (steps, warmup), spec
        assert config.eval_every == config.checkpoint_every == every, spec


def write_photos(folder, per_class=12):
    """Cats are reddish, dogs bluish: learnable in a few steps; sizes vary like real photos."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("validation", per_class // 2)):
        for label, channel in (("cat", 0), ("dog", 2)):
            (folder / split / label).mkdir(parents=True)
            for i in range(count):
                height, width = rng.integers(90, 160, size=2)
                pixels = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
                pixels[..., channel] += 120
                Image.fromarray(pixels).save(folder / split / label / f"{label}.{i}.jpg")
    (folder / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")


def test_cats_resnet_cpu_trains_on_a_folder(tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos)
    workdir = tmp_path / "run"
    result = run_binary(
        "main",
        "--experiment=cats_resnet:cpu",
        f"--config.data.dir={photos}",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
        "--config.batch_size=8",
        "--config.eval_batch_size=8",
        "--config.epochs=2",  # of the 24 readable photos: 6 steps of 8
        "--config.schedule.warmup_epochs=0.5",
        "--config.log_every=3",
        "--config.data.batch_pipeline=mixup(0.2)",
        f"--workdir={workdir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 of" in result.stderr and "broken.jpg" in result.stderr  # the skipped file, reported
    assert "24 training images at batch 8: config.epochs=2 -> config.num_steps=6;" in result.stderr
    config = json.loads((workdir / "config.json").read_text())
    assert (config["num_steps"], config["schedule"]["warmup_steps"]) == (6, 1)
    assert config["eval_every"] == config["checkpoint_every"] == 15  # 5 epochs; the last step too
    dataset = json.loads((workdir / "dataset.json").read_text())
    assert dataset["class_names"] == ["cat", "dog"]
    final = [m for m in read_jsonl(workdir / "metrics.jsonl") if "eval/accuracy" in m][-1]
    assert final["eval/num_examples"] == 12
    assert final["eval/accuracy"] >= 0.75  # learnable colours: chance is 0.5, this run gets 1.0
