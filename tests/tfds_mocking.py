"""TFDS's own builders with mocked data, offline: `tfds.testing.mock_data` makes the examples, and
split metadata written here makes the split sizes known (TFDS 4.9.10 ships none for mock_data,
without which every split is empty)."""

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import tensorflow_datasets as tfds


@contextlib.contextmanager
def mocked_tfds(name: str, data_dir: Path, splits: Iterable[str], examples: int) -> Iterator[None]:
    """Within it, TFDS's real `name` builder yields `examples` random examples of its own feature
    spec in each of `splits`, from `data_dir`, with nothing downloaded or prepared."""
    builder = tfds.builder(name, data_dir=str(data_dir))
    sizes = [tfds.core.SplitInfo(name=s, shard_lengths=[examples], num_bytes=0) for s in splits]
    builder.info.set_splits(tfds.core.SplitDict(sizes))
    builder.data_path.mkdir(parents=True)
    builder.info.write_to_directory(builder.data_path)
    with tfds.testing.mock_data(
        num_examples=examples, data_dir=str(data_dir), policy=tfds.testing.MockPolicy.USE_FILES
    ):
        yield
