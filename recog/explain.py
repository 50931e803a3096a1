"""Grad-CAM (Selvaraju et al. 2017): where in an image the evidence for a class lies.

The class score's gradient with respect to the last convolutional feature map, averaged over the
map's positions, weighs its channels; the ReLU of the weighted sum of the channels is the heatmap,
at the feature map's resolution. It is resized to the network input and then mapped back onto the
image as the user gave it through the preprocessing itself: the transpose of the (linear,
geometric) eval pipeline spreads each heatmap pixel over the image pixels it was made from, and
dividing by the transpose of an all-ones map turns that into an average. Resizes and crops thus
line up exactly; pixels the network never saw (cropped away) stay cold. A run that evaluates
each image mirrored too (config.eval_flip) gets the average of both views' heatmaps, each mapped
back onto the image.

The optional model interface Grad-CAM needs (the built-in models and first-party plugins have it):

    model.features(images) -> the last NHWC feature map, before pooling
    model.classify(feature_map) -> logits
    with model(images) == model.classify(model.features(images))
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from flax import nnx
from matplotlib import colormaps
from PIL import Image

from recog import views
from recog.errors import UserError
from recog.inference import Preprocessing, Trained

OVERLAY_OPACITY = 0.5
COLORMAP = "jet"


def check_supported(model: nnx.Module, model_name: str) -> None:
    if not (
        callable(getattr(model, "features", None)) and callable(getattr(model, "classify", None))
    ):
        raise UserError(
            f"model {model_name!r} cannot be explained: Grad-CAM needs the model to have "
            "features(images) -> last NHWC feature map and classify(feature_map) -> logits "
            "(see recog/explain.py); run without --explain, or add those two methods."
        )


def grad_cam(
    model: nnx.Module,
    images: jax.Array,
    eval_views: tuple[views.View, ...] = views.UPRIGHT,
) -> tuple[jax.Array, jax.Array]:
    """(class probabilities, Grad-CAM heatmaps of each image's most probable class) for
    normalised images (batch, h, w, c); the heatmaps are (batch, h, w), in [0, 1] per image.

    With several `eval_views` (config.eval_flip) the logits are averaged over the views, as the
    eval averages them, and so are the views' heatmaps, each mapped back onto the image.
    """
    feature_maps = [model.features(view.apply(images)).astype(jnp.float32) for view in eval_views]

    def logits_of(maps):
        return sum(model.classify(m) for m in maps) / len(maps)

    logits = logits_of(feature_maps)
    predicted = jnp.argmax(logits, -1)

    def predicted_scores(maps):  # examples are independent in eval mode, so one sum is enough
        return jnp.take_along_axis(logits_of(maps), predicted[:, None], axis=1).sum()

    gradients = jax.grad(predicted_scores)(feature_maps)
    cams = []
    for view, maps, grads in zip(eval_views, feature_maps, gradients, strict=True):
        channel_weights = grads.mean(axis=(1, 2), keepdims=True)
        cam = jax.nn.relu((channel_weights * maps).sum(-1))
        view_shape = view.apply(images).shape[:3]
        cams.append(view.undo(jax.image.resize(cam, view_shape, "bilinear")))
    cams = sum(cams) / len(cams)
    peak = cams.max(axis=(1, 2), keepdims=True)
    cams = jnp.where(peak > 0, cams / jnp.where(peak > 0, peak, 1.0), 0.0)
    return jax.nn.softmax(logits.astype(jnp.float32)), cams


def explainer(trained: Trained) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """uint8 network inputs -> (probabilities, heatmaps at the network input's resolution)."""
    check_supported(trained.model(trained.params, trained.model_state), trained.config.model.name)

    @jax.jit
    def explain(params, model_state, images):
        model = trained.model(params, model_state)
        return grad_cam(model, trained.normalize(images), trained.eval_views)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities, cams = explain(trained.params, trained.model_state, images)
        return np.asarray(probabilities), np.asarray(cams)

    return run


def to_image(preprocessing: Preprocessing, rgb: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """A heatmap at the network input's resolution mapped back onto the image `rgb` (H, W, 3):
    (H, W) in [0, 1], through the transpose of the preprocessing (see the module docstring).

    A pipeline that is not differentiable gets the heatmap stretched over the whole image instead.
    """
    image = tf.convert_to_tensor(rgb, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(image)
        network_input = preprocessing.network_input(image)
    heat = tf.broadcast_to(tf.convert_to_tensor(cam, tf.float32)[..., None], network_input.shape)
    try:
        spread = tape.gradient(network_input, image, output_gradients=heat)
        coverage = tape.gradient(network_input, image, output_gradients=tf.ones_like(network_input))
    except LookupError:  # an op without a registered gradient
        spread = coverage = None
    if spread is None or coverage is None:
        stretched = tf.image.resize(cam[..., None], rgb.shape[:2], antialias=True)
        return np.clip(stretched.numpy()[..., 0], 0.0, 1.0)
    spread = tf.reduce_sum(spread, -1).numpy()
    coverage = tf.reduce_sum(coverage, -1).numpy()
    seen = coverage > 1e-6 * coverage.max()
    mapped = np.where(seen, spread / np.where(seen, coverage, 1.0), 0.0)
    return np.clip(mapped, 0.0, 1.0)


def overlay(rgb: np.ndarray, heatmap: np.ndarray) -> Image.Image:
    """The image with the heatmap drawn over it in colour (blue: none, red: most)."""
    colours = colormaps[COLORMAP](heatmap)[..., :3] * 255.0
    blended = (1.0 - OVERLAY_OPACITY) * rgb.astype(np.float32) + OVERLAY_OPACITY * colours
    return Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8), "RGB")
