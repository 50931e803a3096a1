"""Exports a trained model for serving: one file that needs only JAX to run, no recog, no Flax.

    python -m recog.export --workdir=workdirs/digits_cnn --out=exported/digits.jax
    python -m recog.export --workdir=DIR --out=model.jax --weights=ema --platforms=cpu,cuda
    python -m recog.export --pretrained=efficientnet_lite0:imagenet --out=lite0.jax

writes two files:

- PATH: a serialised `jax.export` artifact (StableHLO with the weights inside) of the function
  uint8 images (batch, height, width, channels) -> class probabilities (batch, classes), with the
  run's normalisation inside (and the test-time views it averages, recog/views.py). The batch
  size is symbolic: any batch runs without re-exporting (height and width are symbolic too when
  the eval pipeline does not fix them); --batch_size=N fixes it for a model that needs it fixed.
- PATH with the suffix .json: the class names, the input shape and dtype, and the preprocessing
  that must come first (config.data.eval_pipeline, the channel count, the size to resize to).

Load and run it anywhere with a compatible JAX (CPU by default; --platforms adds cuda, tpu, ...):

    import json

    import jax
    import numpy as np

    with open("model.jax", "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    with open("model.json") as f:
        info = json.load(f)
    images = np.zeros((4, *info["input_shape"][1:]), np.uint8)  # 4 preprocessed images
    probabilities = np.asarray(exported.call(images))  # (4, len(info["class_names"]))
    print(info["class_names"][int(probabilities[0].argmax())])

The checkpoint is the latest unless --step names another (checkpoint.choose_step, the rule of
every binary); the log says which it took, and the .json records its "step" and why
("checkpoint"). --weights=ema exports the moving average of the
weights when the run kept one. --pretrained=MODEL:TAG exports named pretrained weights
(recog/pretrained.py) with their own classes (ImageNet's 1,000, in words) instead of a run.
"""

import json

import jax
import jax.numpy as jnp
from absl import flags, logging
from etils import epath

from recog import cli, inference, views
from recog.errors import UserError

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")

load_trained_model = cli.trained_model_flags()
_OUT = flags.DEFINE_string("out", None, "Where the artifact goes; its .json goes beside it.")
_PLATFORMS = flags.DEFINE_list(
    "platforms", [], "Platforms to export for: cpu, cuda, rocm, tpu (default: this machine's)."
)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", None, "Fix the batch size (default: any), for a model that needs it fixed."
)


def input_spec(trained: inference.Trained, batch_size: int | None) -> jax.ShapeDtypeStruct:
    """uint8 (batch, height, width, channels); the batch is symbolic unless `batch_size` fixes
    it, and height and width are symbolic where the eval pipeline leaves them to the image."""
    height, width, channels = trained.preprocessing.input_shape()
    if height is None:
        batch, height, width = jax.export.symbolic_shape("batch, height, width")
    else:
        (batch,) = jax.export.symbolic_shape("batch")
    return jax.ShapeDtypeStruct((batch_size or batch, height, width, channels), jnp.uint8)


def export(
    trained: inference.Trained, platforms: list[str] | None = None, batch_size: int | None = None
) -> jax.export.Exported:
    """The trained model as uint8 images -> class probabilities, weights inside."""
    unknown = set(platforms or []) - set(PLATFORMS)
    if unknown:
        raise UserError(
            f"unknown platform(s) {', '.join(sorted(unknown))}; choose from {', '.join(PLATFORMS)}."
        )
    params, model_state = jax.device_get((trained.params, trained.model_state))
    probabilities = trained.probabilities_fn()
    serve = jax.jit(lambda images: probabilities(params, model_state, images))
    try:
        return jax.export.export(serve, platforms=platforms or None)(
            input_spec(trained, batch_size)
        )
    except jax.errors.InconclusiveDimensionOperation as e:
        raise UserError(
            f"model {trained.config.model.name!r} needs fixed sizes where the export leaves them "
            f"open ({str(e).splitlines()[0]}); fix the batch with --batch_size=N."
        ) from None


def describe(trained: inference.Trained, exported: jax.export.Exported) -> dict:
    """What a server needs besides the artifact: labels, input, preprocessing, provenance."""
    preprocessing = trained.preprocessing
    return {
        "class_names": trained.class_names,
        "input_shape": [
            str(d) if not isinstance(d, int) else d for d in exported.in_avals[0].shape
        ],
        "input_dtype": "uint8",
        "output": "class probabilities (batch, classes), in the order of class_names",
        "preprocessing": {
            "pipeline": preprocessing.pipeline,
            "channels": preprocessing.channels,
            "resize_to": list(preprocessing.size) if preprocessing.size else None,
            "how": "decode to RGB (EXIF orientation applied); to grayscale when channels is 1; "
            "the recog augmentation pipeline; resize to resize_to when set and different (box "
            "filter when shrinking, bilinear when enlarging); round to uint8",
        },
        "normalization": {
            "mean": list(trained.config.data.mean),
            "std": list(trained.config.data.std),
        },
        "views_averaged": views.describe(trained.eval_views),
        "platforms": list(exported.platforms),
        "model": trained.config.model.name,
        "workdir": trained.workdir,
        "step": trained.step,
        "checkpoint": trained.chosen_because,
        "weights": trained.weights,
        "pretrained": trained.pretrained,
    }


def main(argv: list[str]) -> None:
    del argv
    if not _OUT.value:
        raise UserError("--out (the file to write) is required.")
    out = epath.Path(_OUT.value)
    info_path = out.with_suffix(".json")
    if info_path == out:
        raise UserError(f"--out={out} would be overwritten by its description; use another suffix.")
    trained = load_trained_model()
    exported = export(trained, _PLATFORMS.value, _BATCH_SIZE.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(exported.serialize()))
    info_path.write_text(json.dumps(describe(trained, exported), indent=2))
    logging.info(
        "Exported %s; to %s (%s) for %s",
        trained.provenance,
        out,
        info_path.name,
        ", ".join(exported.platforms),
    )


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
