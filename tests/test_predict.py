"""Recognising new images with the short digits run: recog.predict as a user runs it (images of any
size and mode, bad files, folders, three output formats, Grad-CAM heatmaps), Grad-CAM's
localisation on a model whose evidence is known, and recog.eval's robustness report."""

import csv
import io
import itertools
import json
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from conftest import read_jsonl, run_binary
from etils import epath
from flax import nnx
from PIL import Image
from sklearn.datasets import load_digits

from recog import explain, inference, plugins, robustness, views
from recog.errors import UserError
from recog.models import info

CLASS_NAMES = [str(d) for d in range(10)]


def digit_image(index: int, size: int, mode: str) -> tuple[Image.Image, str]:
    """Example `index` of scikit-learn's digits, scaled up to size x size, and its label."""
    digits = load_digits()
    pixels = np.round(digits.images[index] * (255.0 / 16.0)).astype(np.uint8)
    image = Image.fromarray(pixels, "L").resize((size, size), Image.Resampling.NEAREST)
    return image.convert(mode), str(digits.target[index])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Test-split digits as files of several sizes, modes and formats, one in a folder tree, plus
    files that cannot be read. Returns (arguments for predict, {path: (label, size)}, bad paths)."""
    root = tmp_path_factory.mktemp("images")
    folder = root / "folder"
    (folder / "sub").mkdir(parents=True)
    good = {}
    for index, size, mode, path in [
        (0, 8, "L", root / "small.png"),
        (5, 24, "RGB", root / "rgb.jpg"),
        (10, 40, "RGBA", folder / "rgba.png"),
        (15, 16, "P", folder / "sub" / "palette.bmp"),
    ]:
        image, label = digit_image(index, size, mode)
        image.save(path)
        good[str(path)] = (label, (size, size))
    wide = Image.new("RGB", (48, 20), (30, 30, 30))
    wide.save(folder / "wide.webp")
    good[str(folder / "wide.webp")] = (None, (48, 20))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (folder / "sub" / "notes.jpg").write_text("not an image\n")
    (folder / "readme.txt").write_text("ignored: not an image suffix\n")
    bad = {str(folder / n) for n in ("empty.jpg", "corrupt.png", "sub/notes.jpg")}
    bad.add(str(root / "missing.png"))
    arguments = [
        str(root / "small.png"),
        str(root / "rgb.jpg"),
        str(folder),
        str(root / "missing.png"),
    ]
    return arguments, good, bad


def predict(workdir, *args, status=1):
    """predict's stdout; `images` names a missing path, so the status is 1 unless told."""
    result = run_binary("predict", f"--workdir={workdir}", *args)
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result.stdout


def test_predict_json_with_heatmaps(trained_workdir, images, tmp_path):
    workdir, _ = trained_workdir
    arguments, good, bad = images
    heatmaps = tmp_path / "heatmaps"
    stdout = predict(workdir, "--format=json", "--top_k=10", f"--explain={heatmaps}", *arguments)
    records = [json.loads(line) for line in stdout.splitlines()]
    assert sorted(r["path"] for r in records) == sorted([*good, *bad])
    assert records[0]["path"] == arguments[0]  # in the order given
    correct = 0
    for record in records:
        if record["path"] in bad:
            assert set(record) == {"path", "error"} and record["error"], record
            continue
        label, size = good[record["path"]]
        probs = [t["prob"] for t in record["top"]]
        assert len(probs) == 10
        assert sorted(t["label"] for t in record["top"]) == CLASS_NAMES
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
        correct += record["top"][0]["label"] == label
        with Image.open(record["heatmap"]) as heatmap:  # the input's own size, not 8x8
            assert heatmap.format == "PNG" and heatmap.size == size and heatmap.mode == "RGB"
    assert correct >= 3  # of the 4 digits: the training run's own preprocessing is used
    errors = {r["path"]: r["error"] for r in records if "error" in r}
    assert errors[arguments[-1]] == "no such file or folder"
    assert errors[next(p for p in bad if p.endswith("empty.jpg"))] == "empty file"
    names = sorted(str(p.relative_to(heatmaps)) for p in heatmaps.rglob("*.png"))
    expected = ["rgba.png", "sub/palette.png", "wide.png"]  # under the folder's name
    assert names == [f"folder/{name}" for name in expected] + ["rgb.png", "small.png"]


def test_predict_csv_and_text(trained_workdir, images):
    workdir, _ = trained_workdir
    arguments, good, bad = images
    rows = list(csv.DictReader(io.StringIO(predict(workdir, "--format=csv", *arguments))))
    assert list(rows[0]) == ["path", "rank", "label", "prob", "error"]
    for path in good:
        mine = [r for r in rows if r["path"] == path]
        assert [r["rank"] for r in mine] == ["1", "2", "3", "4", "5"]  # --top_k defaults to 5
        assert {r["label"] for r in mine} <= set(CLASS_NAMES) and not any(r["error"] for r in mine)
        assert 0 < sum(float(r["prob"]) for r in mine) <= 1 + 1e-6
    for path in bad:
        (row,) = [r for r in rows if r["path"] == path]
        assert row["error"] and not row["label"]

    lines = predict(workdir, "--format=text", "--top_k=2", *arguments).splitlines()
    assert len(lines) == len(good) + len(bad)
    by_path = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines}
    for path in good:
        best = next(r["label"] for r in rows if r["path"] == path and r["rank"] == "1")
        assert by_path[path].startswith(f"{best} (") and by_path[path].count("%") == 2
    for path in bad:
        assert by_path[path].startswith("unreadable (")


def test_predict_exits_0_only_when_every_path_exists_and_an_image_was_recognised(
    trained_workdir, images
):
    workdir, _ = trained_workdir
    _, good, bad = images
    assert len(predict(workdir, *good, status=0).splitlines()) == len(good)
    existing_bad = sorted(p for p in bad if not p.endswith("missing.png"))
    lines = predict(workdir, *existing_bad, status=1).splitlines()
    assert len(lines) == len(existing_bad) and all("unreadable (" in line for line in lines)


def test_checkpoint_choice_errors_name_what_exists(trained_workdir):
    workdir, _ = trained_workdir
    with pytest.raises(UserError, match="no checkpoint at step 45; .* at steps 30, 60"):
        inference.load(workdir, step=45)
    with pytest.raises(UserError, match="kept no moving average .* use --weights=raw"):
        inference.load(workdir, weights="ema")
    assert inference.load(workdir, step=30).step == 30


class BrightVersusDark(nnx.Module):
    """A model whose evidence is known: class 0 ("bright") is scored by the bright pixels of a
    normalised grayscale image, class 1 ("dark") by the dark ones, each against the other."""

    def __init__(self):
        self.weights = nnx.Param(jnp.array([[1.0, -1.0], [-1.0, 1.0]]))

    def features(self, images):
        evidence = jnp.concatenate([nnx.relu(images), nnx.relu(-images)], axis=-1)
        return nnx.avg_pool(evidence, (2, 2), strides=(2, 2))  # half the input's resolution

    def classify(self, feature_map):
        return feature_map.mean(axis=(1, 2)) @ self.weights[...]

    def __call__(self, images):
        return self.classify(self.features(images))


def two_blobs(bright: tuple[slice, slice], dark: tuple[slice, slice]) -> np.ndarray:
    """A mid-grey 32x48 RGB image with a bright and a smaller dark square."""
    image = np.full((32, 48, 3), 128, np.uint8)
    image[bright] = 255
    image[dark] = 0
    return image


def test_grad_cam_heat_follows_the_evidence_for_the_predicted_class():
    """A bright square (the evidence for the predicted class) and a dark one (evidence against
    it: as strong per pixel, so CAM without gradients, or |gradients|, or the other class, would
    light it up too) trade places; the heat must stay on the bright one, mapped back through a
    resize-and-crop eval pipeline onto the 32x48 image, and be 0 where the crop cut away; also
    when the mirrored view's heatmap is averaged in (config.eval_flip)."""
    preprocessing = inference.Preprocessing("resize_small(16)|center_crop(16)", 1, None)
    seen_columns = slice(6, 42)  # 32x48 -> 16x24 -> its middle 16, and the resize filter's reach
    places = {
        "left": (slice(12, 20), slice(10, 18)),
        "right": (slice(12, 20), slice(30, 38)),
        "top": (slice(2, 10), slice(20, 28)),
        "bottom": (slice(22, 30), slice(20, 28)),
    }
    opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
    model = BrightVersusDark()
    all_views = [views.UPRIGHT, views.of(ml_collections.ConfigDict({"eval_flip": True}))]
    for (place, box), eval_views in itertools.product(places.items(), all_views):
        far = places[opposite[place]]
        dark = (slice(far[0].start + 1, far[0].stop - 1), slice(far[1].start + 1, far[1].stop - 1))
        rgb = two_blobs(box, dark)
        network_input = preprocessing(rgb)
        normalised = (network_input[None].astype(np.float32) / 255.0 - 0.5) / 0.5
        probabilities, cams = explain.grad_cam(model, jnp.asarray(normalised), eval_views)
        assert np.argmax(probabilities[0]) == 0, place  # "bright" is predicted
        assert cams.shape == (1, 16, 16) and float(cams.max()) == pytest.approx(1.0)
        heatmap = explain.to_image(preprocessing, rgb, np.asarray(cams[0]))
        assert heatmap.shape == (32, 48) and heatmap.min() >= 0 and heatmap.max() <= 1
        peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        assert box[0].start <= peak[0] < box[0].stop and box[1].start <= peak[1] < box[1].stop
        grown = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in box)
        assert heatmap[grown].sum() > 0.9 * heatmap.sum(), place
        assert heatmap[dark].max() < 0.05, place
        outside = np.ones(heatmap.shape, bool)
        outside[:, seen_columns] = False
        assert not heatmap[outside].any()
        picture = explain.overlay(rgb, heatmap)
        assert picture.size == (48, 32)


class TinyNetwork(nnx.Module):
    """features/classify with 2 class logits."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def features(self, images):
        return nnx.relu(self.conv(images))

    def classify(self, feature_map):
        return self.head(feature_map.mean(axis=(1, 2)))

    def __call__(self, images):
        return self.classify(self.features(images))


def test_grad_cam_with_mirror_views_averages_the_logits_as_the_eval_does():
    model = TinyNetwork(nnx.Rngs(0))
    images = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
    both = views.of(ml_collections.ConfigDict({"eval_flip": True}))
    probabilities, cams = explain.grad_cam(model, images, both)
    expected = jax.nn.softmax(views.average_logits(model, images, both))
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    assert probabilities.shape == (3, 2) and cams.shape == (3, 16, 16)
    assert float(cams.min()) >= 0 and float(cams.max()) <= 1


def test_every_model_architecture_can_be_explained():
    plugins.load_repo_folder()
    for name in [
        "small_cnn",
        "resnet18",
        "preact_resnet18",
        "wrn16_4",
        "convnext_tiny",
        "mobilenet_v2",
        "efficientnet_b0",
    ]:
        model = info.abstract_model(name, 10)
        explain.check_supported(model, name)
        graphdef, state = nnx.split(model)

        def split_forward(state, images, graphdef=graphdef):
            model = nnx.merge(graphdef, state)
            model.eval()
            maps = model.features(images)
            return maps, model.classify(maps)

        maps, logits = jax.eval_shape(
            split_forward, state, jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
        )
        assert maps.ndim == 4 and maps.shape[0] == 2 and logits.shape == (2, 10), name
    with pytest.raises(UserError, match="Grad-CAM needs the model to have features"):
        explain.check_supported(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), "linear")


def test_occlusion_covers_the_fraction_and_rotation_turns_about_the_centre():
    images = np.random.default_rng(0).integers(1, 255, (3, 10, 10, 1), dtype=np.uint8)
    anchors = np.random.default_rng(1).random((3, 2))
    for fraction, pixels in [(0.0, 0), (0.1, 9), (0.3, 30), (0.5, 49)]:
        occluded = robustness.occlude(images, fraction, anchors, [0])
        assert ((occluded != images).sum(axis=(1, 2, 3)) == pixels).all(), fraction
        np.testing.assert_array_equal(occluded, robustness.occlude(images, fraction, anchors, [0]))
    assert (robustness.occlude(images, 0.3, anchors[::-1], [0]) != occluded).any()
    np.testing.assert_array_equal(robustness.rotate(images, 0), images)
    np.testing.assert_array_equal(robustness.rotate(images, 180), images[:, ::-1, ::-1])
    np.testing.assert_array_equal(robustness.rotate(images, 90), np.rot90(images, 1, axes=(1, 2)))


def test_robustness_report_puts_a_baseline_beside(tmp_path):
    def results(workdir, accuracy):
        return {
            "workdir": str(workdir),
            "step": 10,
            "split": "validation",
            "num_examples": 4,
            "seed": 0,
            "occlusion": {"fraction": [0.0, 0.5], "accuracy": [accuracy, accuracy / 2]},
            "rotation": {"degrees": [0, 180], "accuracy": [accuracy, 0.25]},
        }

    before, after = results(tmp_path / "before", 0.5), results(tmp_path / "after", 1.0)
    table = robustness.markdown(after, before)
    assert "| occluded area | before | after |" in table and "| 50% | 0.2500 | 0.5000 |" in table
    assert "| 180° | 0.2500 | 0.2500 |" in table
    robustness.plot(after, epath.Path(tmp_path / "both.png"), before)
    assert (tmp_path / "both.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UserError, match="measure that run first"):
        robustness.read_baseline(epath.Path(tmp_path / "before"))


def test_robustness_report(trained_workdir, tmp_path):
    source, _ = trained_workdir
    workdir = tmp_path / "copy"
    shutil.copytree(source, workdir)
    result = run_binary("eval", f"--workdir={workdir}", "--robustness")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((workdir / "eval" / "robustness.json").read_text())
    assert report == json.loads(result.stdout.strip().splitlines()[-1])
    assert report["step"] == 60 and report["split"] == "test" and report["num_examples"] == 360
    occlusion, rotation = report["occlusion"], report["rotation"]
    assert occlusion["fraction"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert rotation["degrees"] == [0, 30, 60, 90, 120, 150, 180]
    plain = next(
        m["eval/accuracy"]
        for m in read_jsonl(workdir / "metrics.jsonl")
        if m["step"] == 60 and "eval/accuracy" in m
    )
    assert occlusion["accuracy"][0] == pytest.approx(plain) == rotation["accuracy"][0]
    for value in occlusion["accuracy"] + rotation["accuracy"]:
        assert 0 <= value <= 1
    assert occlusion["accuracy"][-1] < plain and min(rotation["accuracy"]) < plain
    table = (workdir / "eval" / "robustness.md").read_text()
    assert "| 50% |" in table and "| 180° |" in table
    assert (workdir / "eval" / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
