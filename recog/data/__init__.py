"""Dataset sources and input pipelines; importing this package registers the built-in datasets."""

import jax
import ml_collections
from jax.experimental import multihost_utils

from recog.data import catalog, cats, digits, folder  # noqa: F401
from recog.data.pipeline import (
    configured_eval_batches,
    configured_train_batches,
    eval_batches,
    train_batches,
)
from recog.data.sources import TfdsSource
from recog.errors import UserError

# config.data keys the pipeline reads; every other key goes to the dataset's factory.
PIPELINE_KEYS = (
    "name",
    "train_split",
    "eval_split",
    "train_pipeline",
    "eval_pipeline",
    "batch_pipeline",
    "mean",
    "std",
    "cache",
    "shuffle_bytes",
)


def make_source(data_config: ml_collections.ConfigDict) -> TfdsSource:
    """The dataset named by data_config.name (registered, or tfds:NAME), prepared and ready to
    read."""
    # A key left at None (a placeholder such as cats_resnet's data.dir) is not set: the factory
    # keeps its default, so `--config.data.name=tfds:NAME` works with any experiment.
    kwargs = {k: v for k, v in data_config.items() if k not in PIPELINE_KEYS and v is not None}
    factory = catalog.factory(data_config.name)

    def build() -> TfdsSource:
        try:
            return factory(**kwargs)
        except TypeError as e:
            raise UserError(f"dataset {data_config.name!r} rejected config.data: {e}") from None

    # Process 0 prepares first; the others then build their source afresh and find the data
    # prepared in a shared data directory, or prepare their own copy in a local one.
    if jax.process_index() == 0:
        source = build()
        source.prepare()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("recog: dataset prepared")
        if jax.process_index() > 0:
            source = build()
            source.prepare()
    for split in (data_config.train_split, data_config.eval_split):
        source.check_split(split)
    return source


def describe(source: TfdsSource) -> dict:
    """What a trained model needs to know of its data: class names and the image shape (None for
    a variable height or width)."""
    shape = source.builder.info.features[source.image_key].shape
    return {"class_names": source.class_names, "image_shape": list(shape)}


def image_channels(source: TfdsSource) -> int:
    return source.channels


__all__ = [
    "TfdsSource",
    "configured_eval_batches",
    "configured_train_batches",
    "eval_batches",
    "image_channels",
    "make_source",
    "train_batches",
]
