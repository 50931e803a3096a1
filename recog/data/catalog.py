"""`tfds:NAME`: any image-classification data set of TFDS's catalogue by name, with no Python file.

    --config.data.name=tfds:oxford_iiit_pet
    --config.data.name=tfds:cifar10:3.*.*            TFDS's own NAME[/CONFIG][:VERSION] form
    --config.data.train_split='train[:90%]'          split names as TFDS has them, slicing allowed

The image is the builder's `tfds.features.Image` feature and the label its `ClassLabel`; where a
builder has several of either, its `supervised_keys` say which, and `config.data.image_key` /
`config.data.label_key` pick them where it has none. Class names, image shape and channels come
from the builder's info. `config.data.data_dir` is the TFDS data directory.

On first use TFDS downloads and prepares the data set into that directory; data sets that TFDS
cannot download (imagenet2012) want their files in DATA_DIR/downloads/manual/ first.
"""

import difflib
import functools

import tensorflow_datasets as tfds

from recog.data.cats import download_problem
from recog.data.sources import TfdsSource
from recog.errors import UserError, unknown_name_message
from recog.registry import DATASETS

PREFIX = "tfds:"
CATALOGUE_URL = "https://www.tensorflow.org/datasets/catalog/overview"


class CatalogSource(TfdsSource):
    """A TFDS catalogue data set that says what to do when TFDS cannot fetch it, before TFDS tries
    (offline, TFDS retries each download for minutes before failing)."""

    def prepare(self) -> None:
        if self.builder.is_prepared():
            return
        name, root = self.builder.name, self.builder.data_dir_root
        manual_dir = root / "downloads" / "manual"
        instructions = self.builder.MANUAL_DOWNLOAD_INSTRUCTIONS
        if instructions and not (manual_dir.is_dir() and any(manual_dir.iterdir())):
            raise UserError(
                f"{name} is not prepared in the TFDS data directory {root}, and TFDS cannot "
                f"download it: put its files into {manual_dir}/ as TFDS asks "
                f"({' '.join(instructions.split())}), then run again; or point "
                "--config.data.data_dir= at a TFDS data directory that has it prepared."
            )
        url = next(iter(self.builder.url_infos or {}), None)
        if url and (problem := download_problem(url)):
            raise UserError(
                f"{name} is not prepared in the TFDS data directory {root} and cannot be "
                f"downloaded now ({url}: {problem}). Run once with network access, or point "
                "--config.data.data_dir= at a TFDS data directory that has it prepared."
            )
        self.builder.download_and_prepare()


def tfds_names() -> list[str]:
    """TFDS's catalogue, plus builders defined by plugins (the community index is left out: it is
    fetched over the network)."""
    return sorted(set(tfds.list_builders(with_community_datasets=False)))


def close_tfds_names(name: str) -> list[str]:
    """`tfds:` names of TFDS's catalogue close to `name`, best first."""
    close = difflib.get_close_matches(name, tfds_names(), n=3, cutoff=0.6)
    return [PREFIX + c for c in close]


def make_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        base = name.split("/")[0].split(":")[0]
        close = close_tfds_names(base)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else "."
        raise UserError(
            f"TFDS has no data set {base!r}{hint} Its catalogue: {CATALOGUE_URL}"
        ) from None
    except (ValueError, AssertionError) as e:  # an unknown config or version of a known data set
        raise UserError(f"{PREFIX}{name}: {' '.join(str(e).split())}") from None


def _described(features: dict) -> str:
    return ", ".join(f"{key} ({type(feature).__name__})" for key, feature in features.items())


def _pick(builder, role, feature_type, config_key, chosen, supervised) -> str:
    """The key of the `feature_type` feature that is the `role` (image or label): `chosen` if
    given, else `supervised` if it is of that type, else the only one the builder has."""
    features = dict(builder.info.features.items())
    candidates = [key for key, f in features.items() if isinstance(f, feature_type)]
    type_name = f"tfds.features.{feature_type.__name__}"
    if chosen is not None:
        if chosen not in candidates:
            raise UserError(
                f"config.data.{config_key}={chosen!r} is not a {type_name} feature of "
                f"{builder.name}; its features: {_described(features)}."
            )
        return chosen
    if supervised in candidates:
        return supervised
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UserError(
            f"{builder.name} has no {type_name} feature for the {role}, so it is not an "
            f"image-classification data set; its features: {_described(features)}."
        )
    raise UserError(
        f"{builder.name} has several {type_name} features ({', '.join(candidates)}) and no "
        f"supervised_keys that say which is the {role}; pick one with config.data.{config_key} "
        f"(--config.data.{config_key}={candidates[0]}, or in the experiment file where its "
        "config.data lacks the key)."
    )


def feature_keys(
    builder: tfds.core.DatasetBuilder, image_key: str | None, label_key: str | None
) -> tuple[str, str]:
    """(image feature, label feature) of `builder`, as the module docstring says."""
    supervised = builder.info.supervised_keys or (None, None)
    image_key = _pick(builder, "image", tfds.features.Image, "image_key", image_key, supervised[0])
    label_key = _pick(
        builder, "label", tfds.features.ClassLabel, "label_key", label_key, supervised[1]
    )
    return image_key, label_key


@DATASETS.register(f"{PREFIX}NAME")  # listed by --list and in unknown-name errors; see factory()
def tfds_dataset(
    name: str,
    data_dir: str | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
) -> TfdsSource:
    """Any TFDS image-classification data set: tfds:oxford_iiit_pet, tfds:NAME/CONFIG:VERSION."""
    builder = make_builder(name, data_dir)
    image_key, label_key = feature_keys(builder, image_key, label_key)
    return CatalogSource(builder, image_key=image_key, label_key=label_key)


def factory(name: str):
    """The factory of the data set `name`: a TFDS one for `tfds:NAME`, else a registered one."""
    if name.startswith(PREFIX):
        return functools.partial(tfds_dataset, name.removeprefix(PREFIX))
    if name in DATASETS:
        return DATASETS.get(name)
    if name in tfds_names():
        raise UserError(
            f"unknown dataset {name!r}; TFDS's catalogue has it: --config.data.name={PREFIX}{name}"
        )
    close = close_tfds_names(name)
    also = f" Close in TFDS's catalogue: {', '.join(close)}." if close else ""
    raise UserError(unknown_name_message("dataset", name, DATASETS.names()) + also)
