"""The `image_folder` dataset: a folder of images with one subfolder per class, as a TFDS dataset.

Two layouts are recognised (class names are the subfolder names, sorted; files may sit in nested
folders below their class folder; names starting with "." are ignored):

    PATH/CLASS/...                          splits by a hash of each file's path relative to PATH:
                                            `train` 80%, `validation` 10%, `test` 10%
    PATH/train/CLASS/...                    splits as given: `train` and at least one of
    PATH/validation/CLASS/...               `validation` and `test`; their classes must all
    PATH/test/CLASS/...                     appear in train/

The hash split (SHA-256 of the relative path, so it is the same on every machine) keeps a file in
its split when other files are added or removed. Microsoft's PetImages archive (PetImages/Cat,
PetImages/Dog) is the first layout.

The folder is prepared once, by a TFDS GeneratorBasedBuilder, into the TFDS data directory
(DATA_DIR/recog_image_folder/NAME-PATHHASH-FINGERPRINT/), and reused while the fingerprint (file
paths, sizes and modification times, plus the options below) is unchanged. When files are added,
removed or modified the fingerprint changes: the folder is prepared again and the outdated copy
deleted. Each image is decoded with PIL (see recog.data.decode) and stored as an RGB JPEG (quality
95), so the tf.data pipeline reads only valid 3-channel images; files that cannot be read are
skipped and reported once, in a warning, when the folder is prepared. Files without an image suffix
(Thumbs.db, README.txt, ...) are ignored.

Options: `max_side` stores each image downscaled so that its longer side is at most that many
pixels (smaller datasets and much faster input pipelines for large photos; None keeps the original
size); `max_pixels` is the largest image accepted (larger ones are skipped, never decoded).
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
import typing
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging

from recog.data import decode
from recog.data.sources import TfdsSource
from recog.errors import UserError
from recog.registry import DATASETS

SPLITS = ("train", "validation", "test")
HASH_SPLIT_PERCENT = {"train": 80, "validation": 10, "test": 10}
REPORTED_SKIPS = 5
DECODE_CHUNK = 256  # files decoded in parallel at a time; bounds the memory held by results


@dataclasses.dataclass(frozen=True)
class ImageFile:
    relative_path: str  # POSIX path relative to the folder: also the example's key
    label: str
    split: str
    size: int
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class FolderScan:
    class_names: tuple[str, ...]
    files: tuple[ImageFile, ...]
    ignored: tuple[str, ...]  # relative paths of files without an image suffix


def _visible(names):
    return sorted(n for n in names if not n.startswith("."))


def _subfolders(path: Path) -> list[str]:
    return [n for n in _visible(os.listdir(path)) if (path / n).is_dir()]


def hash_split(relative_path: str) -> str:
    """`train`, `validation` or `test` for a file of a folder without split subfolders."""
    bucket = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big") % 100
    if bucket < HASH_SPLIT_PERCENT["train"]:
        return "train"
    if bucket < HASH_SPLIT_PERCENT["train"] + HASH_SPLIT_PERCENT["validation"]:
        return "validation"
    return "test"


def scan_folder(folder: Path) -> FolderScan:
    """Lists the image files of `folder` with their labels and splits (see the module docstring)."""
    top = _subfolders(folder)
    if "train" in top and ("validation" in top or "test" in top):
        class_roots = [
            (s, c, folder / s / c) for s in SPLITS if s in top for c in _subfolders(folder / s)
        ]
        class_names = tuple(_subfolders(folder / "train"))
        unknown = sorted({f"{s}/{c}" for s, c, _ in class_roots if c not in class_names})
        if unknown:
            raise UserError(
                f"{folder}: class folders {', '.join(unknown)} have no counterpart in "
                f"{folder / 'train'} (classes there: {', '.join(class_names)})."
            )
    else:
        class_roots = [(None, c, folder / c) for c in top]
        class_names = tuple(top)
    if len(class_names) < 2:
        raise UserError(
            f"{folder} needs one subfolder of images per class (at least two), or train/ and "
            f"validation/ (or test/) folders that each hold such class subfolders; found "
            f"{list(class_names) or 'no subfolders'}."
        )
    files, ignored = [], []
    for split, label, root in class_roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = _visible(dirnames)
            for name in _visible(filenames):
                path = Path(dirpath, name)
                relative = path.relative_to(folder).as_posix()
                if path.suffix.lower() not in decode.IMAGE_SUFFIXES:
                    ignored.append(relative)
                    continue
                try:
                    stat = path.stat()
                    size, mtime_ns = stat.st_size, stat.st_mtime_ns
                except OSError:  # e.g. a broken link: decoding will report it
                    size, mtime_ns = -1, -1
                files.append(
                    ImageFile(relative, label, split or hash_split(relative), size, mtime_ns)
                )
    return FolderScan(class_names, tuple(files), tuple(ignored))


@dataclasses.dataclass(eq=False, kw_only=True)
class FolderConfig(tfds.core.BuilderConfig):
    """One folder as it is now: its files and the preparation options."""

    folder: str
    max_side: int | None
    max_pixels: int
    scan: FolderScan = dataclasses.field(repr=False)


class RecogImageFolder(tfds.core.GeneratorBasedBuilder):
    """Images from a folder with one subfolder per class (see recog.data.folder)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: typing.ClassVar = {"1.0.0": "RGB JPEGs (quality 95) decoded and checked by PIL."}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._skipped: list[tuple[str, str]] = []  # (relative path, reason) of unreadable files

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=self.builder_config.scan.class_names),
                    "image/filename": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            description=f"Images from {self.builder_config.folder}",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # The data is local.
        by_split = collections.defaultdict(list)
        for file in self.builder_config.scan.files:
            by_split[file.split].append(file)
        return {split: self._generate_examples(files) for split, files in by_split.items()}

    def _generate_examples(self, files: list[ImageFile]):
        readable = 0
        for file, image in self._decoded(files):
            readable += 1
            yield (
                file.relative_path,
                {
                    "image": image,
                    "label": file.label,
                    "image/filename": file.relative_path,
                },
            )
        if not readable:  # TFDS cannot store an empty split.
            path, why = self._skipped[-1]
            raise UserError(
                f"none of the {len(files)} image files of split {files[0].split!r} of "
                f"{self.builder_config.folder} can be read, e.g. {path}: {why}"
            )

    def _decoded(self, files: list[ImageFile]):
        """(file, JPEG bytes) of the readable files, in order; records the others as skipped."""
        config = self.builder_config
        options = dict(max_pixels=config.max_pixels, max_side=config.max_side)
        with concurrent.futures.ThreadPoolExecutor() as pool:  # PIL decodes without the GIL
            for start in range(0, len(files), DECODE_CHUNK):
                chunk = files[start : start + DECODE_CHUNK]
                paths = [Path(config.folder, f.relative_path) for f in chunk]
                futures = [pool.submit(decode.read_as_jpeg, p, **options) for p in paths]
                for file, future in zip(chunk, futures, strict=True):
                    try:
                        yield file, future.result()
                    except decode.UnreadableImage as e:
                        self._skipped.append((file.relative_path, str(e)))

    def download_and_prepare(self, *args, **kwargs):
        """TFDS's preparation, then one report of the skipped files and removal of old copies."""
        if self.is_prepared():
            return
        started = time.monotonic()
        super().download_and_prepare(*args, **kwargs)
        config = self.builder_config
        counts = ", ".join(f"{s} {self.info.splits[s].num_examples}" for s in self.info.splits)
        logging.info(
            "Prepared %s into %s in %.0f s: %s images; ignored %d files without an image suffix.",
            config.folder,
            self.data_dir,
            time.monotonic() - started,
            counts,
            len(config.scan.ignored),
        )
        if self._skipped:
            examples = "; ".join(f"{path} ({why})" for path, why in self._skipped[:REPORTED_SKIPS])
            logging.warning(
                "%d of the %d image files of %s cannot be read and were skipped, e.g.: %s",
                len(self._skipped),
                len(config.scan.files),
                config.folder,
                examples,
            )
        self._remove_outdated_copies()

    def _remove_outdated_copies(self) -> None:
        """Deletes earlier preparations of this folder (same name and path, other fingerprint)."""
        current = Path(self.data_dir).parent
        prefix = current.name.rsplit("-", 1)[0]
        for old in current.parent.glob(f"{prefix}-*"):
            if old != current and old.is_dir():
                logging.info(
                    "Removing %s, an outdated copy of %s.", old, self.builder_config.folder
                )
                shutil.rmtree(old)


def _config_name(folder: Path, fingerprint: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", folder.name.lower()).strip("_")[:40] or "folder"
    path_hash = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    return f"{slug}-{path_hash}-{fingerprint[:12]}"


def folder_builder(
    dir: str, data_dir: str | None, max_side: int | None, max_pixels: int
) -> RecogImageFolder:
    """The TFDS builder for the folder `dir` as it is now."""
    folder = Path(dir).expanduser().resolve()
    if not folder.is_dir():
        raise UserError(f"image folder {dir!r} does not exist or is not a directory.")
    scan = scan_folder(folder)
    if not scan.files:
        raise UserError(f"{folder} has no image files (suffixes: {sorted(decode.IMAGE_SUFFIXES)}).")
    listing = [(f.relative_path, f.size, f.mtime_ns) for f in scan.files]
    state = json.dumps([str(RecogImageFolder.VERSION), max_side, max_pixels, listing])
    fingerprint = hashlib.sha256(state.encode()).hexdigest()
    config = FolderConfig(
        name=_config_name(folder, fingerprint),
        folder=str(folder),
        max_side=max_side,
        max_pixels=max_pixels,
        scan=scan,
    )
    return RecogImageFolder(config=config, data_dir=data_dir)


@DATASETS.register("image_folder")
def image_folder(
    dir: str | None = None,
    data_dir: str | None = None,
    max_side: int | None = None,
    max_pixels: int = decode.MAX_PIXELS,
) -> TfdsSource:
    """Any folder of images with one subfolder per class (--config.data.dir=PATH)."""
    if dir is None:
        raise UserError("dataset 'image_folder' needs a folder: --config.data.dir=PATH.")
    return TfdsSource(folder_builder(dir, data_dir, max_side, max_pixels))
