"""Eval metrics: summed on the device batch by batch, summarised on the host once at the end.

loss, top-1 and top-k accuracy, per-class precision / recall / F1, the confusion matrix, and the
expected calibration error (ECE: 15 equal-width confidence bins, Guo et al. 2017).
"""

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax

ECE_BINS = 15
TOP_K = 5  # top-5 accuracy is reported when there are more than 5 classes


def batch_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array, num_classes: int) -> dict:
    """Sums over one batch; padding examples (mask False) count nowhere."""
    weight = mask.astype(jnp.float32)
    probs = jax.nn.softmax(logits.astype(jnp.float32))
    predicted = jnp.argmax(logits, -1)
    confidence = jnp.max(probs, -1)
    correct = (predicted == labels).astype(jnp.float32)
    bins = jnp.clip((confidence * ECE_BINS).astype(jnp.int32), 0, ECE_BINS - 1)
    bin_onehot = jax.nn.one_hot(bins, ECE_BINS) * weight[:, None]
    confusion = jnp.einsum(
        "nt,np->tp",
        jax.nn.one_hot(labels, num_classes) * weight[:, None],
        jax.nn.one_hot(predicted, num_classes),
    )
    sums = {
        "count": jnp.sum(weight),
        "loss_sum": jnp.sum(
            optax.softmax_cross_entropy_with_integer_labels(logits, labels) * weight
        ),
        "correct": jnp.sum(correct * weight),
        "confusion": confusion,
        "bin_confidence": jnp.sum(bin_onehot * confidence[:, None], 0),
        "bin_correct": jnp.sum(bin_onehot * correct[:, None], 0),
    }
    if num_classes > TOP_K:
        in_top_k = jnp.any(jax.lax.top_k(logits, TOP_K)[1] == labels[:, None], axis=-1)
        sums["top_k_correct"] = jnp.sum(in_top_k * weight)
    return sums


def summarize(totals: dict, class_names: list[str]) -> dict:
    """The metrics of a whole eval pass from the summed batch statistics."""
    totals = {k: np.asarray(v, np.float64) for k, v in totals.items()}
    count = totals["count"]
    confusion = totals["confusion"]
    true_positives = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(true_positives / confusion.sum(0))
        recall = np.nan_to_num(true_positives / confusion.sum(1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    gap = np.abs(totals["bin_correct"] - totals["bin_confidence"])
    metrics = {
        "loss": float(totals["loss_sum"] / count),
        "accuracy": float(totals["correct"] / count),
        "ece": float(gap.sum() / count),
        "macro_f1": float(f1.mean()),
        **(
            {f"top{TOP_K}_accuracy": float(totals["top_k_correct"] / count)}
            if "top_k_correct" in totals
            else {}
        ),
        "num_examples": int(count),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(confusion[i].sum()),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion.astype(np.int64).tolist(),
    }
    return metrics


def evaluate(eval_step, state, batches: Iterable, class_names: list[str]) -> dict:
    """Runs `eval_step` over global batches, summing on the device; one host sync at the end."""
    totals = None
    for batch in batches:
        sums = eval_step(state, batch)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return summarize(jax.device_get(totals), class_names)


def evaluate_weights(steps, state, make_batches: Callable[[], Iterable], class_names) -> dict:
    """Evaluates the raw weights and, when the run keeps one, their moving average (reported as
    `ema_accuracy`, `ema_loss`, ...); `make_batches` gives a fresh pass over the eval data."""
    results = evaluate(steps.eval, state, make_batches(), class_names)
    if steps.eval_ema is not None:
        ema = evaluate(steps.eval_ema, state, make_batches(), class_names)
        results.update({f"ema_{k}": v for k, v in scalars(ema).items()})
    return results


def scalars(metrics: dict) -> dict[str, float]:
    """The single numbers of `metrics`, for TensorBoard and the training log."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}
