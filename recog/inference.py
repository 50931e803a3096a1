"""A trained model read back from its work directory, and the training run's own preprocessing for
new image files: what predict, Grad-CAM and export share.

Nothing here needs the training data: the class names and image shape come from
WORKDIR/dataset.json, the model and the eval pipeline from WORKDIR/config.json, the weights from a
checkpoint. The model runs on one device (the first JAX sees), whatever the training run used.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
import tensorflow as tf
from flax import nnx

from recog import augment, experiments, plugins, pretrained, views
from recog.data import decode
from recog.errors import UserError
from recog.train import checkpoint, init_from, workdir_files
from recog.train.optim import path_name
from recog.train.step import create_model, normalize

# --weights: a run's trained weights, or their moving average (config.ema_decay), by train-state
# key. cli.WEIGHTS names the same choices for the flags, which import no Orbax.
STATE_KEYS = {"raw": "params", "ema": "ema_params"}
EVAL_SEED = (0, 0)  # the seed every example gets in data.eval_batches
# Two unrelated sizes: a pipeline that maps both to one shape gives every image that shape.
PROBE_SIZES = ((97, 131), (311, 203))


def resize(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Resizes a float image (H, W, C): each new pixel the average of the pixels it covers (a box
    filter, as a camera sensor or the digits scans average) when shrinking, bilinear otherwise.

    ScaleAndTranslate is the kernel behind tf.image.resize(antialias=True); unlike method="area"
    it has a gradient, through which Grad-CAM maps heatmaps back onto the image.
    """
    height, width = image.shape[:2]
    shrinking = height >= size[0] and width >= size[1]
    return tf.raw_ops.ScaleAndTranslate(
        images=image[None],
        size=size,
        scale=[size[0] / height, size[1] / width],
        translation=[0.0, 0.0],
        kernel_type="box" if shrinking else "triangle",
        antialias=True,
    )[0]


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Image file -> the uint8 network input, as the training run's eval data was made.

    `channels` is the model's input channel count (1: grayscale), `pipeline` the run's
    config.data.eval_pipeline, and `size` the (height, width) of the training images when they
    all had one (the result is resized to it when the pipeline does not already give it).
    """

    pipeline: str
    channels: int
    size: tuple[int, int] | None

    @functools.cached_property
    def ops(self) -> list[augment.pipeline.Op]:
        return augment.parse(self.pipeline)

    @staticmethod
    def read(path: str | os.PathLike) -> np.ndarray:
        """The image at `path` as upright RGB uint8 (H, W, 3); raises decode.UnreadableImage."""
        return tf.io.decode_jpeg(decode.read_as_jpeg(path), channels=3).numpy()

    def network_input(self, rgb: tf.Tensor) -> tf.Tensor:
        """RGB (H, W, 3) -> the float32 network input, before rounding to uint8.

        The eval pipeline runs as augment.apply runs it, less its final rounding, so that it stays
        differentiable: Grad-CAM maps heatmaps back to the image through its gradient.
        """
        if self.channels == 1:
            rgb = tf.image.rgb_to_grayscale(rgb)
        image = rgb
        if self.ops:
            seeds = tf.random.experimental.stateless_split(
                tf.constant(EVAL_SEED, tf.int64), len(self.ops)
            )
            for i, op in enumerate(self.ops):
                image = op(image, seeds[i])
        image = tf.cast(image, tf.float32)
        if self.size is not None and tuple(image.shape[:2]) != self.size:
            image = resize(image, self.size)
        return image

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> the uint8 network input (h, w, channels)."""
        image = self.network_input(tf.convert_to_tensor(rgb))
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8).numpy()

    def input_shape(self) -> tuple[int | None, int | None, int]:
        """(height, width, channels) of every network input; None where it follows the image."""
        if self.size is not None:
            return (*self.size, self.channels)
        shapes = {self(np.zeros((*size, 3), np.uint8)).shape for size in PROBE_SIZES}
        return shapes.pop() if len(shapes) == 1 else (None, None, self.channels)


@dataclasses.dataclass(frozen=True)
class Trained:
    """One checkpoint's weights with the eval-mode model definition and what describes it."""

    workdir: str
    config: ml_collections.ConfigDict
    class_names: list[str]
    step: int
    chosen_because: str  # why this checkpoint: "the latest, also the best by accuracy 0.9639"
    weights: str  # "raw" or "ema"
    graphdef: nnx.GraphDef
    params: nnx.State
    model_state: nnx.State
    preprocessing: Preprocessing
    pretrained: str | None = None  # MODEL:TAG where named pretrained weights, not a run

    @property
    def provenance(self) -> str:
        """Which weights, for the logs."""
        if self.pretrained:
            return f"the pretrained weights {self.pretrained}: {self.chosen_because}"
        return (
            f"step {self.step} of {self.workdir}: {self.chosen_because} (--step=N for another); "
            f"{self.weights} weights"
        )

    def model(self, params: nnx.State, model_state: nnx.State) -> nnx.Module:
        """The eval-mode model on these (possibly traced) weights; call it inside jit."""
        return nnx.merge(self.graphdef, params, model_state)

    def normalize(self, images: jax.Array) -> jax.Array:
        """uint8 network inputs -> what the model takes, as training normalised them."""
        return normalize(images, self.config.data.mean, self.config.data.std)

    @property
    def eval_views(self) -> tuple[views.View, ...]:
        """The views of each image whose logits the run's eval averages (config.eval_flip);
        predictions average the same, so that they agree with the eval."""
        return views.of(self.config)

    def probabilities_fn(self) -> Callable[[nnx.State, nnx.State, jax.Array], jax.Array]:
        """f(params, model_state, uint8 images) -> class probabilities (batch, classes)."""

        def probabilities(params, model_state, images):
            model = self.model(params, model_state)
            images = self.normalize(images)
            logits = views.average_logits(model, images, self.eval_views)
            return jax.nn.softmax(logits.astype(jax.numpy.float32))

        return probabilities

    @functools.cached_property
    def probabilities(self) -> Callable[[np.ndarray], np.ndarray]:
        """uint8 images (batch, h, w, channels) -> class probabilities, compiled per shape."""
        compiled = jax.jit(self.probabilities_fn())
        return lambda images: np.asarray(compiled(self.params, self.model_state, images))


def load(
    workdir: str | os.PathLike,
    *,
    step: int | None = None,
    weights: str = "raw",
    extra_plugins: list[str] | None = None,
) -> Trained:
    """Reads the run's config, class names and a checkpoint (checkpoint.choose_step) from
    `workdir`; `weights="ema"` takes the moving average of the weights, when the run kept one."""
    if weights not in STATE_KEYS:
        raise UserError(f"--weights must be one of {', '.join(STATE_KEYS)}, not {weights!r}.")
    config = workdir_files.read_config(workdir)
    plugins.load_all(list(config.get("plugins", [])) + list(extra_plugins or []))
    dataset = workdir_files.read_dataset_info(workdir)
    class_names = list(dataset["class_names"])
    *size, channels = dataset["image_shape"]
    if channels not in (1, 3):
        raise UserError(
            f"{workdir} was trained on {channels}-channel images; recognising new image files "
            "needs a model of grayscale (1) or RGB (3) images."
        )
    if weights == "ema" and not config.ema_decay:
        raise UserError(
            f"the run in {workdir} kept no moving average of its weights (config.ema_decay is "
            "0); use --weights=raw."
        )

    abstract_model = nnx.eval_shape(
        lambda: create_model(config, len(class_names), channels, config.seed)
    )
    abstract_model.eval()
    graphdef, params, model_state = nnx.split(abstract_model, nnx.Param, ...)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    weights_key = STATE_KEYS[weights]
    wanted = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        {weights_key: params, "model_state": model_state},
    )
    mngr = checkpoint.manager(workdir, for_reading=True)
    chosen = checkpoint.choose_step(mngr, workdir, step)
    state = checkpoint.restore(mngr, chosen, wanted, workdir, weights_only=True)
    return Trained(
        workdir=str(workdir),
        config=config,
        class_names=class_names,
        step=chosen,
        chosen_because=checkpoint.why_chosen(mngr, config, chosen, step),
        weights=weights,
        graphdef=graphdef,
        params=state[weights_key],
        model_state=state["model_state"],
        preprocessing=Preprocessing(
            pipeline=config.data.eval_pipeline,
            channels=channels,
            size=None if None in size else tuple(size),
        ),
    )


def load_pretrained(name: str, *, extra_plugins: list[str] | None = None) -> Trained:
    """Named pretrained weights (recog/pretrained.py) as a model that recognises their own
    classes (ImageNet's, in words), with the preprocessing they were evaluated with."""
    plugins.load_all(list(extra_plugins or []))  # a plugin may register the weights
    weights = pretrained.get(name)
    class_names = pretrained.class_names(weights.classes)
    config = ml_collections.ConfigDict(
        {
            "seed": 0,
            "model": {"name": weights.model, "dtype": "float32"},
            "data": {
                "mean": weights.mean,
                "std": weights.std,
                "eval_pipeline": weights.eval_pipeline,
            },
            "plugins": list(extra_plugins or []),
        }
    )
    experiments.add_defaults(config)
    abstract_model = nnx.eval_shape(lambda: create_model(config, len(class_names), 3, 0))
    abstract_model.eval()
    graphdef, params, _ = nnx.split(abstract_model, nnx.Param, ...)

    @jax.jit
    def fresh_model_state():  # RNG counters and the like; jit drops the random parameters
        return nnx.split(create_model(config, len(class_names), 3, 0), nnx.Param, ...)[2]

    model_state = fresh_model_state()
    targets = init_from.weights_by_path({"params": params, "model_state": model_state})
    tensors = init_from.file_tensors(pretrained.file_path(name), weights.model, targets)
    init_from.check_fit(name, weights.model, tensors, targets, set())

    def loaded(key_path, leaf):
        tensor = tensors.get(path_name(key_path))
        return leaf if tensor is None else jax.numpy.asarray(tensor.array, leaf.dtype)

    return Trained(
        workdir=name,
        config=config,
        class_names=class_names,
        step=0,
        chosen_because=weights.description,
        weights="raw",
        graphdef=graphdef,
        params=jax.tree_util.tree_map_with_path(loaded, params),
        model_state=jax.tree_util.tree_map_with_path(loaded, model_state),
        preprocessing=Preprocessing(pipeline=weights.eval_pipeline, channels=3, size=None),
        pretrained=name,
    )


def load_either(
    workdir: str | None,
    pretrained_name: str | None,
    *,
    step: int | None,
    weights: str,
    extra_plugins: list[str],
) -> Trained:
    """What --workdir or --pretrained names, for the binaries that take either."""
    if bool(workdir) == bool(pretrained_name):
        raise UserError(
            "name one of --workdir (a training run) or --pretrained (named weights such as "
            f"efficientnet_lite0:imagenet; known: {', '.join(pretrained.PRETRAINED)})."
        )
    if workdir:
        return load(workdir, step=step, weights=weights, extra_plugins=extra_plugins)
    if step is not None or weights != "raw":
        raise UserError("--step and --weights choose a checkpoint of --workdir; drop them.")
    return load_pretrained(pretrained_name, extra_plugins=extra_plugins)
