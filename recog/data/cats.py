"""The `cats_vs_dogs` dataset: photos of cats and dogs, from TFDS or from a folder of your own.

By default it is TFDS's own `cats_vs_dogs` builder: Microsoft's PetImages archive (787 MiB), which
TFDS downloads and prepares into the TFDS data directory on first use (23,262 photos after TFDS
drops 1,738 corrupt files; labels cat=0, dog=1). TFDS gives it a single `train` split; the split
names `train`, `validation` and `test` stand for these fixed slices of it, in TFDS's deterministic
example order, the same on every machine:

    train       TRAIN_SPLIT       "train[:80%]"      18,610 photos
    validation  VALIDATION_SPLIT  "train[80%:90%]"    2,326 photos
    test        TEST_SPLIT        "train[90%:]"       2,326 photos

Without network access, and without a prepared copy in the TFDS data directory, preparing fails
within seconds, with a message that says how to proceed (instead of TFDS retrying for minutes).
Offline, TFDS prepares it from a copy of Microsoft's archive put into
DATA_DIR/downloads/manual/kagglecatsanddogs_5340.zip; a copy that is not that archive (a partial or
corrupt download) is one error that names the file and says what to do, instead of TFDS's
NonMatchingChecksumError.

With `dir=PATH` (--config.data.dir=PATH) the photos come from that folder instead, through the
`image_folder` dataset (recog.data.folder): one subfolder per class (PetImages/Cat, PetImages/Dog),
or train/ and validation/ folders of those. Its splits have the same names, `train`, `validation`
and `test`, so one config serves both sources. (For that dataset's options, such as `max_side`,
name it directly: --config.data.name=image_folder.)
"""

import os
import urllib.request

import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums, download_manager

from recog.data import folder
from recog.data.sources import TfdsSource
from recog.errors import UserError
from recog.registry import DATASETS

TRAIN_SPLIT = "train[:80%]"
VALIDATION_SPLIT = "train[80%:90%]"
TEST_SPLIT = "train[90%:]"
PROBE_TIMEOUT_S = 10


def download_problem(url: str) -> str | None:
    """Why `url` cannot be fetched now (one quick request, headers only), or None if it can."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as e:  # URLError, HTTPError, timeouts, DNS and connection failures
        return str(getattr(e, "reason", e))


class CatsVsDogsSource(TfdsSource):
    """TFDS's cats_vs_dogs, checked for availability before TFDS starts its download."""

    def prepare(self) -> None:
        if self.builder.is_prepared():
            return
        (url, url_info), *_ = self.builder.url_infos.items()
        manual_copy = self.builder.data_dir_root / "downloads" / "manual" / url_info.filename
        if not manual_copy.exists() and (problem := download_problem(url)):
            raise UserError(
                f"cats_vs_dogs is not prepared in the TFDS data directory "
                f"{self.builder.data_dir_root} and cannot be downloaded now ({url}: {problem}). "
                f"Either run once with network access (TFDS downloads {url_info.size} and prepares "
                f"it there), point --config.data.data_dir= at a TFDS data directory that has it, "
                f"put {url_info.filename} into {manual_copy.parent}/, or train on a folder of "
                f"photos with one subfolder per class: --config.data.dir=PATH."
            )
        try:
            self.builder.download_and_prepare()
        except download_manager.NonMatchingChecksumError as e:
            if manual_copy.exists():
                raise UserError(not_the_archive(manual_copy, url, url_info)) from None
            raise UserError(
                f"the file TFDS downloaded from {url} is not the expected cats_vs_dogs archive "
                f"({' '.join(str(e).split())}); remove that file and run again."
            ) from None


def not_the_archive(path: os.PathLike, url: str, expected: checksums.UrlInfo) -> str:
    """Why the manual copy at `path` is not the archive at `url`, and what to do about it."""
    found_size = os.path.getsize(path)
    if found_size != expected.size:
        difference = f"it has {found_size:,} bytes where the archive has {int(expected.size):,}"
    else:
        found = checksums.compute_url_info(path).checksum
        difference = f"its SHA-256 is {found} where the archive's is {expected.checksum}"
    return (
        f"{path} is not the expected cats_vs_dogs archive: {difference} (a partial or corrupt "
        f"download); download it again from {url}, or remove it to let TFDS download it."
    )


@DATASETS.register("cats_vs_dogs")
def cats_vs_dogs(dir: str | None = None, data_dir: str | None = None) -> TfdsSource:
    """Cats and dogs: TFDS's cats_vs_dogs, or a folder of photos with --config.data.dir=PATH."""
    if dir is not None:
        return folder.image_folder(dir, data_dir)
    return CatsVsDogsSource(
        tfds.builder("cats_vs_dogs", data_dir=data_dir),
        split_aliases={"train": TRAIN_SPLIT, "validation": VALIDATION_SPLIT, "test": TEST_SPLIT},
    )
