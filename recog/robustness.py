"""How accuracy holds up when the eval images are damaged: occluded or rotated.

    python -m recog.eval --workdir=DIR --robustness [--step=N] [--config.seed=S]

Each eval image, after the eval pipeline, is changed in one way at a time and the whole split is
evaluated again with the checkpoint's raw weights:

- occlusion: a rectangle of the dataset's mean colour (zero after normalisation, as in Cutout)
  covering 0, 10, ..., 50% of the image area (as near as whole pixels allow), placed at random;
  each image keeps one random anchor for every fraction, drawn from config.seed, so the results
  are the same on every run with that seed;
- rotation: by 0, 30, ..., 180 degrees about the centre (bilinear; corners black).

Level 0 of both is the plain eval, with the test-time views the run evaluates with
(recog/views.py). Results go to WORKDIR/eval/robustness.json (and .md, a table) with a plot,
WORKDIR/eval/robustness.png. `--baseline=OTHER_WORKDIR`, a run measured before, puts its results
beside these in the table and the plot (a recipe before and after a change):

    python -m recog.eval --workdir=DIR --robustness --baseline=BASELINE_DIR
"""

from __future__ import annotations

import functools
import json
import math

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from etils import epath
from jax.sharding import NamedSharding
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

from recog import data
from recog.augment import geometry
from recog.data.sources import TfdsSource
from recog.errors import UserError
from recog.train import checkpoint, evaluation
from recog.train.step import Steps

OCCLUSION_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
ROTATION_DEGREES = (0, 30, 60, 90, 120, 150, 180)


def occlusion_box(height: int, width: int, fraction: float) -> tuple[int, int]:
    """(rows, columns) of a rectangle shaped like the image covering about `fraction` of it."""
    rows = min(height, round(height * math.sqrt(fraction)))
    columns = min(width, round(fraction * height * width / rows)) if rows else 0
    return rows, columns


def occlude(images: np.ndarray, fraction: float, anchors: np.ndarray, fill) -> np.ndarray:
    """Fills one box per image (N, H, W, C) with `fill`; `anchors` (N, 2) in [0, 1) place each
    box between the image's top-left and bottom-right corners."""
    _, height, width, _ = images.shape
    rows, columns = occlusion_box(height, width, fraction)
    top = np.floor(anchors[:, 0] * (height - rows + 1)).astype(int)
    left = np.floor(anchors[:, 1] * (width - columns + 1)).astype(int)
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    inside = (
        (y >= top[:, None, None])
        & (y < (top + rows)[:, None, None])
        & (x >= left[:, None, None])
        & (x < (left + columns)[:, None, None])
    )
    return np.where(inside[..., None], np.asarray(fill, images.dtype), images)


def _rotated(images: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
    matrix = geometry.rotation_matrix(images[0], degrees)
    return tf.map_fn(
        lambda image: geometry.warp(image, matrix), images, fn_output_signature=tf.float32
    )


@functools.cache
def _compiled_rotated():  # made on first use: a module-level tf.function loads TensorFlow
    return tf.function(_rotated)


def rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    """Rotates every image (N, H, W, C uint8) by `degrees` about its centre."""
    rotated = _compiled_rotated()(tf.convert_to_tensor(images), tf.constant(degrees, tf.float32))
    return tf.cast(tf.clip_by_value(tf.round(rotated), 0, 255), tf.uint8).numpy()


def measure(
    config: ml_collections.ConfigDict,
    source: TfdsSource,
    steps: Steps,
    state: dict,
    sharding: NamedSharding,
) -> dict:
    """Accuracy on config.data.eval_split at every occlusion fraction and rotation angle."""
    fill = np.round(np.asarray(config.data.mean) * 255.0).astype(np.uint8)

    def accuracy(damage) -> float:
        damaged = data.configured_eval_batches(source, config, sharding, damage)
        return evaluation.evaluate(steps.eval, state, damaged, source.class_names)["accuracy"]

    def anchors(images: np.ndarray, number: int) -> np.ndarray:
        rng = np.random.default_rng([config.seed, jax.process_index(), number])
        return rng.random((len(images), 2))

    return {
        "occlusion": {
            "fraction": list(OCCLUSION_FRACTIONS),
            "accuracy": [
                accuracy(lambda x, n, f=f: occlude(x, f, anchors(x, n), fill))
                for f in OCCLUSION_FRACTIONS
            ],
        },
        "rotation": {
            "degrees": list(ROTATION_DEGREES),
            "accuracy": [accuracy(lambda x, _, d=d: rotate(x, d)) for d in ROTATION_DEGREES],
        },
    }


def label(results: dict) -> str:
    return epath.Path(results["workdir"]).name if "workdir" in results else "baseline"


def markdown(results: dict, baseline: dict | None = None) -> str:
    runs = [results] if baseline is None else [baseline, results]
    lines = [
        f"# Robustness of {label(results)} at step {results['step']}",
        "",
        f"Split `{results['split']}`, {results['num_examples']} examples, raw weights, "
        f"seed {results['seed']}. Occlusion: a box of the dataset's mean colour covering the given "
        "share of each image at a random place. Rotation: about the centre, corners black.",
    ]
    if baseline is not None:
        lines.append(
            f"Baseline: {baseline.get('workdir', '?')} at step {baseline['step']} "
            f"({baseline['num_examples']} examples of `{baseline['split']}`)."
        )
    columns = " | ".join(label(run) for run in runs)
    rule = " ---: |" * len(runs)
    for kind, levels, unit in (
        ("occlusion", "fraction", "occluded area"),
        ("rotation", "degrees", "rotation"),
    ):
        lines += ["", f"| {unit} | {columns} |", f"| ---: |{rule}"]
        for i, level in enumerate(results[kind][levels]):
            name = f"{level:.0%}" if kind == "occlusion" else f"{level}°"
            values = " | ".join(f"{run[kind]['accuracy'][i]:.4f}" for run in runs)
            lines.append(f"| {name} | {values} |")
    lines += ["", "![robustness](robustness.png)", ""]
    return "\n".join(lines)


def plot(results: dict, path: epath.Path, baseline: dict | None = None) -> None:
    fig = Figure(figsize=(10, 4))
    occlusion_ax, rotation_ax = fig.subplots(1, 2, sharey=True)
    for run, style in ((baseline, "s--"), (results, "o-")):
        if run is None:
            continue
        occlusion = run["occlusion"]
        occlusion_ax.plot(
            [100 * f for f in occlusion["fraction"]], occlusion["accuracy"], style, label=label(run)
        )
        rotation = run["rotation"]
        rotation_ax.plot(rotation["degrees"], rotation["accuracy"], style, label=label(run))
    occlusion_ax.set_xlabel("occluded area (%)")
    occlusion_ax.set_ylabel("accuracy")
    rotation_ax.set_xlabel("rotation (degrees)")
    rotation_ax.set_xticks(ROTATION_DEGREES)
    for ax, title in ((occlusion_ax, "Occlusion"), (rotation_ax, "Rotation")):
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(title)
    if baseline is not None:
        rotation_ax.legend(loc="lower left")
    fig.suptitle(f"Accuracy on {results['split']} at step {results['step']}")
    fig.tight_layout()
    with path.open("wb") as f:  # also on gs://
        fig.savefig(f, format="png", dpi=100)


def read_baseline(workdir: epath.Path) -> dict:
    """The results a --robustness run wrote to `workdir` before."""
    path = workdir / "eval" / "robustness.json"
    if not path.is_file():
        raise UserError(
            f"--baseline: {path} does not exist; measure that run first with "
            f"python -m recog.eval --workdir={workdir} --robustness"
        )
    return json.loads(path.read_text())


def run(
    workdir: epath.Path,
    config: ml_collections.ConfigDict,
    source: TfdsSource,
    steps: Steps,
    sharding: NamedSharding,
    step: int | None,
    baseline: dict | None = None,
) -> dict:
    """Measures the checkpoint at `step` (default: checkpoint.choose_step's) and writes the
    report files, with a `baseline`'s results beside (read_baseline); returns the results."""
    mngr = checkpoint.manager(workdir, for_reading=True)
    step = checkpoint.choose_step(mngr, workdir, step)
    state = checkpoint.restore(mngr, step, steps.abstract_state, workdir, weights_only=True)
    results = {
        "workdir": str(workdir),
        "step": step,
        "split": config.data.eval_split,
        "num_examples": source.num_examples(config.data.eval_split),
        "seed": config.seed,
        **measure(config, source, steps, state, sharding),
    }
    if jax.process_index() == 0:
        out = workdir / "eval"
        out.mkdir(parents=True, exist_ok=True)
        (out / "robustness.json").write_text(json.dumps(results, indent=2))
        (out / "robustness.md").write_text(markdown(results, baseline))
        plot(results, out / "robustness.png", baseline)
    return results
