"""A short eval report a person would rather look at than read: WORKDIR/eval/report.md with a
confusion-matrix picture and the training curves (PNG)."""

import json

import numpy as np
from etils import epath
from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

MAX_CLASSES_DRAWN = 40


def _read_jsonl(path: epath.Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_confusion_matrix(
    confusion: list[list[int]], class_names: list[str], path: epath.Path
) -> None:
    matrix = np.asarray(confusion, np.float64)
    recall = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = 2.5 + 0.45 * len(class_names)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    image = ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            color = "white" if recall[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(count)}", ha="center", va="center", color=color, fontsize=8)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    ax.set_title("Confusion matrix")
    fig.tight_layout()
    with path.open("wb") as f:  # also on gs://
        fig.savefig(f, format="png", dpi=100)


def plot_training_curves(workdir: epath.Path, path: epath.Path) -> None:
    train_log = _read_jsonl(workdir / "metrics.jsonl")
    eval_log = _read_jsonl(workdir / "eval" / "metrics.jsonl")
    fig = Figure(figsize=(11, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for key, ax, label in [
        ("train/loss", loss_ax, "train"),
        ("eval/loss", loss_ax, "eval during training"),
        ("train/accuracy", acc_ax, "train"),
        ("eval/accuracy", acc_ax, "eval during training"),
    ]:
        points = sorted((m["step"], m[key]) for m in train_log if key in m)
        if points:
            ax.plot(*zip(*points, strict=True), label=label, marker="." if "eval" in key else None)
    for key, ax in [("loss", loss_ax), ("accuracy", acc_ax)]:
        points = sorted({m["step"]: m[key] for m in eval_log if key in m}.items())
        if points:
            ax.plot(*zip(*points, strict=True), "o", label="recog.eval")
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    loss_ax.set_yscale("log")
    fig.tight_layout()
    with path.open("wb") as f:  # also on gs://
        fig.savefig(f, format="png", dpi=100)


def write_report(workdir: epath.Path, step: int, results: dict) -> epath.Path:
    """Writes eval/report.md and its pictures for the results of `step`; returns the report path."""
    out = workdir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    class_names = list(results["per_class"])
    lines = [
        f"# Evaluation at step {step}",
        "",
        f"Split `{results.get('split', '?')}`, {results['num_examples']} examples.",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    for name, value in results.items():
        if isinstance(value, float):
            lines.append(f"| {name} | {value:.4f} |")
    lines += [
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in results["per_class"].items():
        scores = " | ".join(f"{m[k]:.3f}" for k in ("precision", "recall", "f1"))
        lines.append(f"| {name} | {scores} | {m['support']} |")
    if len(class_names) <= MAX_CLASSES_DRAWN:
        plot_confusion_matrix(
            results["confusion_matrix"], class_names, out / "confusion_matrix.png"
        )
        lines += ["", "![confusion matrix](confusion_matrix.png)"]
    plot_training_curves(workdir, out / "training_curves.png")
    lines += ["", "![training curves](training_curves.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
