"""recog.export on the short digits run: the serialised artifact, loaded with nothing but
jax.export and the description beside it, gives the probabilities recog.predict gives; the log and
the description say which checkpoint it took."""

import json

import jax
import ml_collections
import numpy as np
import pytest
from conftest import run_binary
from PIL import Image

from recog.inference import Preprocessing
from recog.train import checkpoint


def test_exported_model_gives_predicts_probabilities(trained_workdir, tmp_path):
    workdir, _ = trained_workdir
    paths = []
    for index, (size, mode) in enumerate([((8, 8), "L"), ((30, 20), "RGB"), ((17, 41), "RGBA")]):
        pixels = np.random.default_rng(index).integers(0, 256, (size[1], size[0], len(mode)))
        path = tmp_path / f"image{index}.png"
        Image.fromarray(pixels.astype(np.uint8).squeeze(), mode).save(path)
        paths.append(str(path))

    out = tmp_path / "served" / "digits.jax"
    result = run_binary("export", f"--workdir={workdir}", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["class_names"] == [str(d) for d in range(10)]
    assert info["input_shape"] == ["batch", 8, 8, 1] and info["input_dtype"] == "uint8"
    assert info["preprocessing"] == {**info["preprocessing"], "pipeline": "", "channels": 1}
    assert info["preprocessing"]["resize_to"] == [8, 8] and info["step"] == 60
    assert info["checkpoint"].startswith("the latest")
    assert f"Exported step 60 of {workdir}: {info['checkpoint']} (--step=N" in result.stderr

    predicted = run_binary("predict", f"--workdir={workdir}", "--format=json", "--top_k=10", *paths)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    records = [json.loads(line) for line in predicted.stdout.splitlines()]
    expected = np.array(
        [
            [{t["label"]: t["prob"] for t in r["top"]}[name] for name in info["class_names"]]
            for r in records
        ]
    )

    exported = jax.export.deserialize(bytearray(out.read_bytes()))
    preprocess = Preprocessing(
        info["preprocessing"]["pipeline"],
        info["preprocessing"]["channels"],
        tuple(info["preprocessing"]["resize_to"]),
    )
    images = np.stack([preprocess(Preprocessing.read(path)) for path in paths])
    probabilities = np.asarray(exported.call(images))  # a batch of 3 ...
    np.testing.assert_allclose(probabilities, expected, atol=2e-6)
    single = np.asarray(exported.call(images[1:2]))  # ... or of 1: the batch is symbolic
    np.testing.assert_allclose(single[0], probabilities[1], atol=1e-6)
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(3), abs=1e-5)


class Checkpoints:
    """What checkpoint.why_chosen asks of a checkpoint manager: its steps and their metrics."""

    def __init__(self, metrics: dict[int, dict]):
        self._metrics = metrics

    def all_steps(self):
        return sorted(self._metrics)

    def metrics(self, step):
        return self._metrics[step]


def test_the_latest_checkpoint_is_taken_and_the_log_says_where_the_best_is():
    config = ml_collections.ConfigDict({"best_metric": "loss"})
    scored = Checkpoints({10: {"loss": 0.5}, 20: {"loss": 0.25}, 30: {"loss": 0.375}})
    assert checkpoint.choose_step(scored, "DIR", None) == 30
    assert (
        checkpoint.why_chosen(scored, config, 30, None)
        == "the latest; the best by loss 0.25 is step 20"
    )
    assert checkpoint.why_chosen(scored, config, 10, 10) == "as asked"
    improving = Checkpoints({10: {"loss": 0.5}, 20: {"loss": 0.25}})
    assert checkpoint.why_chosen(improving, config, 20, None) == (
        "the latest, also the best by loss 0.25"
    )
    unscored = Checkpoints({10: None, 20: None})
    assert checkpoint.choose_step(unscored, "DIR", None) == 20
    assert checkpoint.why_chosen(unscored, config, 20, None) == (
        "the latest; no checkpoint was saved with eval metrics"
    )
