"""tf.data input pipelines: per-host shards, a deterministic order, batches as numpy.

The training stream is a pure function of (seed, step): epoch e is the host's shard shuffled with a
seed derived from (seed, e), and every example's augmentation seed is derived from its position in
the stream. Resuming at step s therefore starts exactly where an uninterrupted run would be, with
no iterator state in the checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from recog import augment, parallel
from recog.data.sources import TfdsSource

SHUFFLE_BYTES = 1 << 30  # the shuffle buffer's default size: 1 GiB of stored examples


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


def shuffle_buffer_size(source: TfdsSource, split: str, shuffle_bytes: int) -> int:
    """How many stored examples of `split` go into each epoch's shuffle buffer (at least 1, at
    most all) so that two buffers (see `shuffled_epochs`) hold at most `shuffle_bytes`."""
    fitting = int(shuffle_bytes / 2 // max(1.0, source.mean_example_bytes(split)))
    return max(1, min(source.num_examples(split), fitting))


def shuffled_epochs(
    base: tf.data.Dataset,
    num_examples: int,
    buffer_size: int,
    seed: int,
    first_epoch: int,
    fill_ahead: bool,
) -> tf.data.Dataset:
    """(position in the stream, example) for every epoch from `first_epoch` on, each epoch
    shuffled by its own seed.

    With `fill_ahead` the epochs run through a parallel interleave that holds two of them open,
    one block of a whole epoch at a time: the order stays epoch after epoch, while the next epoch
    fills its shuffle buffer in the background instead of stalling the stream at the boundary
    (so two buffers are full at once). Without it (a cached `base`, whose refill costs no
    decoding, and which two open epochs would each fill) the epochs follow one another.
    """

    def epoch(e):
        shuffled = base.shuffle(buffer_size, seed=seed * 1_000_003 + e)
        return shuffled.enumerate().map(lambda i, example: (e * num_examples + i, example))

    epochs = tf.data.Dataset.range(first_epoch, 2**62)
    if not fill_ahead:
        return epochs.flat_map(epoch)
    return epochs.interleave(
        epoch,
        cycle_length=2,
        block_length=num_examples,
        num_parallel_calls=2,
        deterministic=True,
    )


def train_batches(
    source: TfdsSource,
    split: str,
    *,
    global_batch_size: int,
    pipeline: str,
    seed: int,
    start_step: int = 0,
    cache: bool = True,
    shuffle_bytes: int = SHUFFLE_BYTES,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches of this host's shard, starting at `start_step`, as numpy dicts.

    The shuffle holds examples as stored (JPEG or PNG bytes, at most `shuffle_bytes` of them),
    and the augmentation pipeline decodes each one after it, cropping while it decodes where the
    pipeline starts with a crop. A resume skips the examples before `start_step` undecoded.
    With `cache` (small data sets) the decoded images are kept in memory instead, all of them,
    and the shuffle spans the whole split.
    """
    local_batch = global_batch_size // jax.process_count()
    split = host_split(source.resolve_split(split), drop_remainder=True)
    num_examples = source.num_examples(split)
    if cache:
        base, buffer_size = source.read(split).cache(), num_examples
    else:
        base = source.read(split, decode=False)
        buffer_size = shuffle_buffer_size(source, split, shuffle_bytes)
    first_epoch, offset = divmod(start_step * local_batch, num_examples)
    ops = augment.parse(pipeline)

    def preprocess(position, example):
        example_seed = tf.stack([tf.constant(seed, tf.int64), position])
        return {
            "image": augment.apply(ops, example["image"], example_seed, source.channels),
            "label": example["label"],
        }

    ds = shuffled_epochs(base, num_examples, buffer_size, seed, first_epoch, fill_ahead=not cache)
    ds = ds.skip(offset)
    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options()).as_numpy_iterator()


def configured_train_batches(
    source: TfdsSource, config: ml_collections.ConfigDict, start_step: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """`train_batches` as an experiment config sets it up."""
    return train_batches(
        source,
        config.data.train_split,
        global_batch_size=config.batch_size,
        pipeline=config.data.train_pipeline,
        seed=config.seed,
        start_step=start_step,
        cache=config.data.cache,
        shuffle_bytes=config.data.shuffle_bytes,
    )


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
    ds = ds.map(preprocess, tf.data.AUTOTUNE)
    padding = ds.take(1).map(lambda ex: {**ex, "mask": tf.constant(False)}).repeat()
    ds = ds.concatenate(padding).take(num_batches * local_batch)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options()).as_numpy_iterator()


def configured_eval_batches(
    source: TfdsSource,
    config: ml_collections.ConfigDict,
    sharding: jax.sharding.NamedSharding,
    damage: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> Iterator[dict[str, jax.Array]]:
    """config.data.eval_split as recog.main, recog.eval and the robustness eval all read it:
    global batches of config.eval_batch_size through the eval pipeline, placed by `sharding`;
    `damage(images, batch_number)` first changes each host batch's uint8 images (robustness)."""
    batches = eval_batches(
        source,
        config.data.eval_split,
        global_batch_size=config.eval_batch_size,
        pipeline=config.data.eval_pipeline,
    )
    for number, batch in enumerate(batches):
        if damage is not None:
            batch = {**batch, "image": damage(batch["image"], number)}
        yield parallel.to_global(batch, sharding)
