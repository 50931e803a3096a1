"""Test-time views (config.eval_flip, config.eval_rotations, config.eval_tilt_degrees), and the
robust cats recipe: on data whose orientation misleads, turned photos are recognised where the
upright-only recipe fails."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_binary
from flax import nnx
from PIL import Image

from recog import experiments, views
from recog.augment import geometry
from recog.errors import UserError


def config_of(eval_flip: bool, eval_rotations: int | None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict({"eval_flip": eval_flip})
    if eval_rotations is not None:
        config.eval_rotations = eval_rotations
    return config


def test_views_are_the_product_of_mirrors_and_quarter_turns():
    assert views.of(config_of(False, None)) == views.UPRIGHT  # a config from before the key
    assert views.of(config_of(True, 1)) == (views.View(0, False), views.View(0, True))
    assert [v.quarter_turns for v in views.of(config_of(False, 2))] == [0, 2]
    eight = views.of(config_of(True, 4))
    assert len(set(eight)) == 8
    assert views.describe(eight) == "upright and mirrored, 4 evenly spaced quarter turns each"
    with pytest.raises(UserError, match="eval_rotations must be one of"):
        views.of(config_of(False, 3))


def tilted_config(tilt_degrees: float) -> ml_collections.ConfigDict:
    config = config_of(True, 4)
    config.eval_tilt_degrees = tilt_degrees
    config.data = ml_collections.ConfigDict({"mean": (0.2, 0.4, 0.6), "std": (0.5, 0.25, 0.2)})
    return config


def test_tilted_views_add_each_view_turned_both_ways_with_black_corners():
    tilted = views.of(tilted_config(30.0))
    assert len(set(tilted)) == 24
    assert {v.tilt_degrees for v in tilted} == {0.0, 30.0, -30.0}
    assert views.describe(tilted) == (
        "upright and mirrored, 4 evenly spaced quarter turns each, each also tilted by ±30 degrees"
    )
    assert views.of(tilted_config(0.0)) == views.of(config_of(True, 4))
    with pytest.raises(UserError, match="eval_tilt_degrees must be at least 0 and under 90"):
        views.of(tilted_config(90.0))
    # The corners a tilt uncovers are black as the model sees black: normalised 0.
    white = jnp.full((1, 32, 32, 3), 1.0)
    corner = tilted[1].apply(white)[0, 0, 0]
    np.testing.assert_allclose(corner, [-0.4, -1.6, -3.0], rtol=1e-6)


def test_a_tilt_turns_images_as_the_rotation_augmentation_and_the_robustness_eval_do():
    images = np.random.default_rng(0).uniform(0, 255, (2, 20, 26, 3)).astype(np.float32)
    for degrees in (30.0, -30.0, 135.0):
        expected = [
            geometry.warp(tf.constant(image), geometry.rotation_matrix(image, degrees)).numpy()
            for image in images
        ]
        np.testing.assert_allclose(views.tilt(images, degrees), expected, atol=1e-3)
    # what the tilt uncovers takes the fill, and a view's undo turns a map back
    y, x = np.mgrid[:24, :24]
    blob = np.exp(-((y - 9) ** 2 + (x - 14) ** 2) / 8.0).astype(np.float32)[None]
    view = views.View(1, True, 30.0)
    back = np.asarray(view.undo(view.apply(blob)))[0]
    assert np.unravel_index(np.argmax(back), back.shape) == (9, 14)
    assert back[0, 0] == 0.0


def test_tilted_views_lower_for_accelerators():
    tilted = views.of(tilted_config(30.0))

    def mean_colour(images):
        return images.mean(axis=(1, 2))

    average = jax.jit(lambda images: views.average_logits(mean_colour, images, tilted))
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    for platform in ("tpu", "cuda"):
        text = average.trace(images).lower(lowering_platforms=(platform,)).as_text()
        assert "stablehlo.gather" in text and "custom_call" not in text


def test_undo_maps_each_view_back_onto_the_image():
    images = jnp.arange(2 * 3 * 5, dtype=jnp.float32).reshape(2, 3, 5)  # not square
    for view in views.of(config_of(True, 4)):
        np.testing.assert_array_equal(view.undo(view.apply(images)), images)


def head_outputs(views_, image_turn: int, class_logits, wrong=()):
    """Model outputs on each view of an image turned `image_turn` from upright: class logits,
    then orientation logits sure of the view's turn (or, for the views in `wrong`, sure that the
    view is upright)."""
    outputs = []
    for view, logits in zip(views_, class_logits, strict=True):
        turn = 0 if view in wrong else views.turns_from_upright(view, np.array(image_turn))
        orientation = 3.0 * jax.nn.one_hot(turn, views.ORIENTATIONS)
        outputs.append(jnp.concatenate([jnp.asarray(logits), orientation])[None])
    return outputs


def test_an_orientation_head_takes_the_view_that_all_views_agree_is_upright():
    four = views.of(config_of(False, 4))
    class_logits = [[float(k), 0.0] for k in range(4)]
    # Turned one quarter turn, the image is upright three more turns on: view 3 is upright. View
    # 0 wrongly says it is itself upright; the other three outvote it.
    outputs = head_outputs(four, 1, class_logits, wrong=(four[0],))
    np.testing.assert_allclose(views.combine(outputs, four, True), [[3.0, 0.0]], atol=0.01)
    np.testing.assert_allclose(views.combine(outputs, four), np.mean(outputs, axis=0))  # no head

    eight = views.of(config_of(True, 4))
    class_logits = [[float(v.quarter_turns), 10.0 * v.mirrored] for v in eight]
    outputs = head_outputs(eight, 1, class_logits)
    # Upright: view 3 and, since the mirror reverses the image's turn, the mirrored view 1.
    np.testing.assert_allclose(views.combine(outputs, eight, True), [[2.0, 5.0]], atol=0.01)

    config = config_of(True, 1)
    config.orientation_weight = 0.5
    with pytest.raises(UserError, match="set config.eval_rotations=4, not 1"):
        views.of(config)
    config.eval_rotations = 4
    assert views.describe(views.of(config), True).endswith("weighted by the orientation head")


class TinyNetwork(nnx.Module):
    """Convolutions, pooling with a stride and a linear layer: sensitive to turns, like a CNN."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
        self.head = nnx.Linear(8 * 12 * 12, 3, rngs=rngs)

    def __call__(self, images):
        features = nnx.relu(self.conv(images))
        return self.head(features.reshape(len(images), -1))


def test_eight_views_make_any_network_invariant_to_quarter_turns_and_mirrors():
    model = TinyNetwork(nnx.Rngs(0))
    images = jax.random.normal(jax.random.key(1), (2, 24, 24, 3))
    eight = views.of(config_of(True, 4))
    logits = views.average_logits(model, images, eight)
    for view in eight:
        turned = views.average_logits(model, view.apply(images), eight)
        np.testing.assert_allclose(turned, logits, rtol=1e-5, atol=1e-5)
    upright = model(images)
    assert not np.allclose(model(jnp.rot90(images, 1, axes=(1, 2))), upright, atol=1e-3)


def write_misleading_photos(folder, per_class: int):
    """Training photos of cats are lit from above and dogs from below, always, and cats are a
    little reddish and dogs bluish in 3 of 4 (colour survives any turn, light does not); in the
    validation photos both cues agree. A recipe that sees only upright photos learns the light,
    the perfect cue, and fails on turned photos; one that sees them turned must learn colour."""
    rng = np.random.default_rng(0)
    light = np.linspace(0, 150, 64)[:, None, None]
    for split, count, colour_agrees in (
        ("train", per_class, 0.75),
        ("validation", per_class // 2, 1.0),
    ):
        for label, channel, lit in (("cat", 0, light[::-1]), ("dog", 2, light)):
            (folder / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.uniform(0, 60, (64, 64, 3)) + lit
                agrees = i < round(colour_agrees * count)
                pixels[..., channel if agrees else 2 - channel] += 40
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                image.save(folder / split / label / f"{i}.png")


def test_the_robust_recipe_recognises_turned_photos_the_upright_one_does_not(tmp_path):
    photos = tmp_path / "photos"
    write_misleading_photos(photos, per_class=48)
    robust = experiments.load("cats_resnet:robust_cpu")
    assert (
        robust.model.name == "p4m_resnet18" and "random_rotation(45" in robust.data.train_pipeline
    )
    results = {}
    for variant in ("cpu", "robust_cpu"):
        workdir = tmp_path / variant
        recipe = experiments.load(f"cats_resnet:{variant}").data
        assert "inception_crop(96," in recipe.train_pipeline
        assert recipe.eval_pipeline == "resize_small(110)|center_crop(96)"
        common = [
            f"--config.data.dir={photos}",
            f"--config.data.data_dir={tmp_path / 'tfds'}",
            # The recipe's own augmentations, at the photos' 64 px instead of 96 (half the work).
            "--config.data.train_pipeline="
            + recipe.train_pipeline.replace("inception_crop(96,", "inception_crop(64,"),
            "--config.data.eval_pipeline=resize_small(73)|center_crop(64)",
            "--config.batch_size=32",
            "--config.eval_batch_size=48",
            "--config.num_steps=30",
            "--config.schedule.warmup_steps=5",
            "--config.eval_every=30",
            "--config.log_every=15",
        ]
        width = ["--config.model.width=8"] if variant == "cpu" else []  # robust_cpu sets its own
        result = run_binary(
            "main", f"--experiment=cats_resnet:{variant}", f"--workdir={workdir}", *common, *width
        )
        assert result.returncode == 0, result.stderr[-3000:]
        baseline = [f"--baseline={tmp_path / 'cpu'}"] if variant == "robust_cpu" else []
        result = run_binary("eval", f"--workdir={workdir}", "--robustness", *baseline)
        assert result.returncode == 0, result.stderr[-3000:]
        results[variant] = json.loads((workdir / "eval" / "robustness.json").read_text())
    upright, robust = (results[v]["rotation"]["accuracy"] for v in ("cpu", "robust_cpu"))
    assert upright[0] >= 0.9 and robust[0] >= 0.9  # both learn the upright photos
    assert min(robust) >= 0.9, robust  # ... and the robust one turned ones too
    assert upright[-1] <= 0.5, upright  # turned over, the light misleads the upright recipe
    assert np.mean(robust[1:]) >= np.mean(upright[1:]) + 0.2
    table = (tmp_path / "robust_cpu" / "eval" / "robustness.md").read_text()
    assert "| rotation | cpu | robust_cpu |" in table  # the baseline beside
    assert f"| 180° | {upright[-1]:.4f} | {robust[-1]:.4f} |" in table
