"""tf.data input pipelines: per-host shards, a deterministic order, batches as numpy.

The training stream is a pure function of (seed, step): epoch e is the host's shard shuffled with a
seed derived from (seed, e), and every example's augmentation seed is derived from its position in
the stream. Resuming at step s therefore starts exactly where an uninterrupted run would be, with
no iterator state in the checkpoint.
"""

import math
from collections.abc import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from recog import augment
from recog.data.sources import TfdsSource

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 16_384


def host_split(split: str, drop_remainder: bool) -> str:
    """This process's part of `split` (the whole split on a single host)."""
    if jax.process_count() == 1:
        return split
    parts = tfds.even_splits(split, n=jax.process_count(), drop_remainder=drop_remainder)
    return parts[jax.process_index()]


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = True
    options.threading.private_threadpool_size = 0
    return options


def train_batches(
    source: TfdsSource,
    split: str,
    *,
    global_batch_size: int,
    pipeline: str,
    seed: int,
    start_step: int = 0,
    cache: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches of this host's shard, starting at `start_step`, as numpy dicts."""
    local_batch = global_batch_size // jax.process_count()
    split = host_split(source.resolve_split(split), drop_remainder=True)
    num_examples = source.num_examples(split)
    base = source.read(split)
    if cache:
        base = base.cache()
    first_epoch, offset = divmod(start_step * local_batch, num_examples)
    ops = augment.parse(pipeline)

    def epoch(e):
        shuffled = base.shuffle(min(num_examples, SHUFFLE_BUFFER), seed=seed * 1_000_003 + e)
        return shuffled.enumerate().map(lambda i, ex: (e * num_examples + i, ex))

    def preprocess(position, example):
        example_seed = tf.stack([tf.constant(seed, tf.int64), position])
        return {
            "image": augment.apply(ops, example["image"], example_seed),
            "label": example["label"],
        }

    ds = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(offset)
    ds = ds.map(preprocess, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(AUTOTUNE)
    return ds.with_options(_options()).as_numpy_iterator()


def eval_batches(
    source: TfdsSource, split: str, *, global_batch_size: int, pipeline: str
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over `split` in fixed-size batches with a `mask` marking real examples.

    Every host yields the same number of batches (padding with masked examples), as a global
    jit step over all hosts needs.
    """
    local_batch = global_batch_size // jax.process_count()
    largest_host_split = math.ceil(source.num_examples(split) / jax.process_count())
    num_batches = math.ceil(largest_host_split / local_batch)
    ops = augment.parse(pipeline)

    def preprocess(example):
        image = augment.apply(ops, example["image"], tf.zeros([2], tf.int64))
        return {"image": image, "label": example["label"], "mask": tf.constant(True)}

    ds = source.read(host_split(source.resolve_split(split), drop_remainder=False))
    ds = ds.map(preprocess, AUTOTUNE)
    padding = ds.take(1).map(lambda ex: {**ex, "mask": tf.constant(False)}).repeat()
    ds = ds.concatenate(padding).take(num_batches * local_batch)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(AUTOTUNE)
    return ds.with_options(_options()).as_numpy_iterator()
