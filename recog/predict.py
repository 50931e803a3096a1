"""Recognises new images with a trained work directory; needs no flags but --workdir and paths.

    python -m recog.predict --workdir=workdirs/digits_cnn photo.png more_photos/
    python -m recog.predict --workdir=DIR --format=json --top_k=3 photos/ > predictions.jsonl
    python -m recog.predict --workdir=DIR --explain=heatmaps/ photos/
    python -m recog.predict --pretrained=efficientnet_lite0:imagenet photo.jpg

--pretrained=MODEL:TAG instead of --workdir recognises with named pretrained weights
(recog/pretrained.py) and their own classes: ImageNet's 1,000, in words, for the built-in ones.

PATHs are image files or folders, searched recursively for files with an image suffix (.jpg,
.png, .gif, .bmp, .webp, .tif, ...). Each image is prepared as the run's eval data was: decoded
robustly (any mode, EXIF orientation applied), converted to the model's channels, passed through
config.data.eval_pipeline, and resized to the training images' size when they all had one. A run
that evaluates each image mirrored too (config.eval_flip: recog/views.py) has its logits averaged
over the same views here, so that predictions agree with recog.eval.

The checkpoint is the latest (--step=N for another; checkpoint.choose_step, the rule of every
binary), and the log says which it took and where the best by config.best_metric is; its raw
weights (--weights=ema for their moving average, when the run kept one). Output, one record per
image:

    --format=text  seven.png: 7 (97.1%), 9 (1.4%), 3 (0.6%)
    --format=json  {"path": "seven.png", "top": [{"label": "7", "prob": 0.971}, ...]}
    --format=csv   path,rank,label,prob,error   (a header, then one row per label)

A file that cannot be read (empty, corrupt, not an image) is reported in its place, as
{"path": ..., "error": ...} in json, and skipped. The exit status is 0 when every named path
exists and at least one image was recognised, 1 otherwise (after every record is printed), and 2
for a usage error, so that a script can tell.

--explain=OUTDIR also writes, for each image, a PNG of the image at its own size with the Grad-CAM
heatmap of its predicted class laid over it (see recog/explain.py): OUTDIR/NAME.png for a file
argument, OUTDIR/FOLDER/RELATIVE/PATH.png for the images found in a folder argument.
"""

import csv
import dataclasses
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import flags, logging

from recog import cli, inference
from recog.data import decode
from recog.errors import UserError

load_trained_model = cli.trained_model_flags()
_TOP_K = flags.DEFINE_integer("top_k", 5, "How many of the most probable classes to show.")
_FORMAT = flags.DEFINE_enum("format", "text", ["text", "json", "csv"], "Output format.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per forward pass.")
_EXPLAIN = flags.DEFINE_string(
    "explain", None, "Write a Grad-CAM heatmap PNG of each image into this folder."
)

CSV_HEADER = ("path", "rank", "label", "prob", "error")
MISSING = "no such file or folder"


@dataclasses.dataclass(frozen=True)
class ImageFile:
    path: Path
    name: Path  # its heatmap goes to --explain/NAME with the suffix made .png
    missing: bool = False


def image_files(arguments: Iterable[str]) -> Iterator[ImageFile]:
    """The files named, and the image files under the folders named (sorted), in order."""
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = (
                p
                for p in path.rglob("*")
                if p.suffix.lower() in decode.IMAGE_SUFFIXES and p.is_file()
            )
            for file in sorted(found):
                yield ImageFile(file, Path(path.resolve().name) / file.relative_to(path))
        else:
            yield ImageFile(path, Path(path.name), missing=not path.exists())


def heatmap_path(outdir: Path, image: ImageFile, taken: set[Path]) -> Path:
    """OUTDIR/NAME.png, numbered (NAME_2.png, ...) where two images would share one."""
    candidate = outdir / image.name.with_suffix(".png")
    for number in itertools.count(2):
        if candidate not in taken:
            break
        candidate = outdir / image.name.with_name(f"{image.name.stem}_{number}.png")
    taken.add(candidate)
    return candidate


def batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def read(trained: inference.Trained, image: ImageFile) -> tuple[np.ndarray, np.ndarray] | str:
    """(the image as RGB, its network input), or why it cannot be recognised."""
    if image.missing:
        return MISSING
    try:
        rgb = trained.preprocessing.read(image.path)
        return rgb, trained.preprocessing(rgb)
    except (decode.UnreadableImage, tf.errors.OpError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__


def recognise(
    trained: inference.Trained,
    images: Iterable[ImageFile],
    *,
    top_k: int,
    batch_size: int,
    explain_to: Path | None = None,
) -> Iterator[dict]:
    """One record per image, in order: {"path", "top": [{"label", "prob"}, ...]} (plus
    "heatmap" with explain_to), or {"path", "error"} for a file that cannot be recognised."""
    explain_batch = None
    if explain_to is not None:
        from recog import explain  # here: it imports matplotlib, which plain predictions skip

        explain_batch = explain.explainer(trained)
    taken = set()
    for chunk in batches(images, batch_size):
        records = [{"path": str(image.path)} for image in chunk]
        loaded = {}
        for index, image in enumerate(chunk):
            result = read(trained, image)
            if isinstance(result, str):
                records[index]["error"] = result
            else:
                loaded[index] = result
        by_shape = {}  # variable-size pipelines give several shapes; each is one forward pass
        for index, (_, network_input) in loaded.items():
            by_shape.setdefault(network_input.shape, []).append(index)
        for shape, indices in by_shape.items():
            # Padded to a power of two: few compiles, and a lone image is not run 32 times over.
            padded = min(batch_size, 1 << (len(indices) - 1).bit_length())
            batch = np.zeros((padded, *shape), np.uint8)
            batch[: len(indices)] = [loaded[i][1] for i in indices]
            if explain_batch is None:
                probabilities, cams = trained.probabilities(batch), None
            else:
                probabilities, cams = explain_batch(batch)
            for row, index in enumerate(indices):
                best = np.argsort(-probabilities[row], kind="stable")[:top_k]
                records[index]["top"] = [
                    {
                        "label": trained.class_names[c],
                        "prob": round(float(probabilities[row, c]), 6),
                    }
                    for c in best
                ]
                if cams is not None:
                    rgb = loaded[index][0]
                    path = heatmap_path(explain_to, chunk[index], taken)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    heatmap = explain.to_image(trained.preprocessing, rgb, cams[row])
                    explain.overlay(rgb, heatmap).save(path, format="PNG")
                    records[index]["heatmap"] = str(path)
        yield from records


def text_line(record: dict) -> str:
    if "error" in record:
        return f"{record['path']}: unreadable ({record['error']})"
    guesses = ", ".join(f"{t['label']} ({t['prob']:.1%})" for t in record["top"])
    heatmap = f"  [heatmap: {record['heatmap']}]" if "heatmap" in record else ""
    return f"{record['path']}: {guesses}{heatmap}"


def csv_rows(record: dict) -> list[tuple]:
    if "error" in record:
        return [(record["path"], "", "", "", record["error"])]
    return [
        (record["path"], rank, t["label"], f"{t['prob']:.6f}", "")
        for rank, t in enumerate(record["top"], start=1)
    ]


def main(argv: list[str]) -> None:
    paths = argv[1:]
    if not paths:
        raise UserError("name at least one image file or folder to recognise after the flags.")
    if _TOP_K.value < 1 or _BATCH_SIZE.value < 1:
        raise UserError("--top_k and --batch_size must be at least 1.")
    trained = load_trained_model()
    logging.info("Recognising with %s", trained.provenance)
    records = recognise(
        trained,
        image_files(paths),
        top_k=min(_TOP_K.value, len(trained.class_names)),
        batch_size=_BATCH_SIZE.value,
        explain_to=Path(_EXPLAIN.value) if _EXPLAIN.value else None,
    )
    writer = csv.writer(sys.stdout, lineterminator="\n")
    if _FORMAT.value == "csv":
        writer.writerow(CSV_HEADER)
    counts = {"recognised": 0, "unreadable": 0}
    missing = 0
    for record in records:
        counts["unreadable" if "error" in record else "recognised"] += 1
        missing += record.get("error") == MISSING
        if _FORMAT.value == "json":
            print(json.dumps(record))
        elif _FORMAT.value == "csv":
            writer.writerows(csv_rows(record))
        else:
            print(text_line(record))
        sys.stdout.flush()
    if not any(counts.values()):
        raise UserError(
            f"found no image files in {', '.join(paths)}; image suffixes: "
            f"{', '.join(sorted(decode.IMAGE_SUFFIXES))}."
        )
    logging.info("%d image(s) recognised, %d unreadable.", *counts.values())
    if missing or not counts["recognised"]:
        sys.exit(1)


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
