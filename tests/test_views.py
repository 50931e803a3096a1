"""Test-time views (config.eval_flip), the removed view and head keys refused, and the robust cats
recipe: on data whose orientation misleads, turned photos are recognised where the upright-only
recipe fails."""

import json

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import run_binary
from PIL import Image

from recog import experiments, views
from recog.errors import UserError


def test_views_are_the_image_and_with_eval_flip_its_mirror_image():
    assert views.of(experiments.from_json("{}")) == views.UPRIGHT  # a config from before the key
    both = views.of(ml_collections.ConfigDict({"eval_flip": True}))
    assert both == (views.View(False), views.View(True))
    assert views.describe(both) == "upright and mirrored"
    images = jnp.arange(2 * 3 * 5, dtype=jnp.float32).reshape(2, 3, 5)  # not square
    np.testing.assert_array_equal(both[1].apply(images), images[:, :, ::-1])
    for view in both:
        np.testing.assert_array_equal(view.undo(view.apply(images)), images)


@pytest.mark.parametrize(
    ("key", "value"),
    [("orientation_weight", 1.0), ("eval_rotations", 4), ("eval_tilt_degrees", 30.0)],
)
def test_a_config_that_turns_on_a_removed_feature_is_refused(key, value):
    """A work directory written before issue 34 holds these keys at their "off" values, and
    still loads; one that used the feature says so instead of running without it."""
    off = {k: default for k, (default, _) in experiments.REMOVED_KEYS.items()}
    assert experiments.from_json(json.dumps({"eval_flip": True, **off})).eval_flip
    with pytest.raises(UserError, match=f"config.{key}=.*taken out of recog"):
        experiments.from_json(json.dumps({**off, key: value}))


SIZE = 32  # the photos' side in pixels


def write_misleading_photos(folder, per_class: int):
    """Training photos of cats are lit from above and dogs from below, always, and cats are a
    little reddish and dogs bluish in 3 of 4 (colour survives any turn, light does not); in the
    validation photos both cues agree. A recipe that sees only upright photos learns the light,
    the perfect cue, and fails on turned photos; one that sees them turned must learn colour."""
    rng = np.random.default_rng(0)
    light = np.linspace(0, 150, SIZE)[:, None, None]
    for split, count, colour_agrees in (
        ("train", per_class, 0.75),
        ("validation", per_class // 2, 1.0),
    ):
        for label, channel, lit in (("cat", 0, light[::-1]), ("dog", 2, light)):
            (folder / split / label).mkdir(parents=True)
            for i in range(count):
                pixels = rng.uniform(0, 60, (SIZE, SIZE, 3)) + lit
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
            # The recipe's own augmentations, at the photos' 32 px instead of 96.
            "--config.data.train_pipeline="
            + recipe.train_pipeline.replace("inception_crop(96,", f"inception_crop({SIZE},"),
            f"--config.data.eval_pipeline=resize_small({SIZE + 4})|center_crop({SIZE})",
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
