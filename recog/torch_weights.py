"""PyTorch weights for recog models: state dicts read without running pickled code, their module
names mapped by per-model converters, their tensors put into recog's layouts.

A converter takes the name of a PyTorch module in a state dict (`layer1.0.conv1`) and returns the
path of the recog module that takes its tensors (`blocks/0/conv1`). The tensors are renamed and
laid out here, the same way for every model: `weight` becomes a convolution's or linear layer's
`kernel` (OIHW -> HWIO; (out, in) -> (in, out); a 1x1 convolution's may fill a linear layer) or a
normalisation layer's `scale`; `running_mean` and `running_var` become BatchNorm's `mean` and
`var`; `num_batches_tracked` is dropped; any other tensor keeps its name, and size-1 axes are
dropped where recog's tensor has fewer axes (ConvNeXt's layer scale). A model plugin registers
its own converter under its model's name:

    from recog import TORCH_CONVERTERS

    @TORCH_CONVERTERS.register("my_net")
    def my_net_from_torchvision(module: str) -> str:
        return module.replace("features.", "layers/").replace(".", "/")

The built-in ResNets read torchvision's and timm's layout (the two name their ResNets' tensors
alike).
"""

import dataclasses
import io
import re

import numpy as np
import safetensors.numpy
from etils import epath
from safetensors import SafetensorError

from recog.errors import UserError
from recog.registry import Registry

TORCH_CONVERTERS = Registry("PyTorch converter")
PICKLE_SUFFIXES = (".pth", ".pt", ".bin")  # torch.save's files; .bin is Hugging Face's name
SAFETENSORS_SUFFIX = ".safetensors"
LEAF_NAMES = {"running_mean": "mean", "running_var": "var"}
DROPPED_LEAVES = ("num_batches_tracked",)  # a BatchNorm step counter recog has no use for
RESNET_BLOCKS = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "resnet200": (3, 24, 36, 3),
}


def is_weights_file(path: str) -> bool:
    return path.endswith((*PICKLE_SUFFIXES, SAFETENSORS_SUFFIX))


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a `.safetensors` file, or of a state dict saved by `torch.save`, read with
    `torch.load(weights_only=True)` (which refuses pickled code); floating tensors as float32."""
    data = epath.Path(path).read_bytes()
    if path.endswith(SAFETENSORS_SUFFIX):
        try:
            tensors = safetensors.numpy.load(data)
        except SafetensorError as e:
            raise UserError(f"{path} is not a readable safetensors file: {e}") from None
    else:
        tensors = _torch_tensors(path, data)
    return {
        name: t.astype(np.float32) if np.issubdtype(t.dtype, np.floating) else t
        for name, t in tensors.items()
    }


def _torch_tensors(path: str, data: bytes) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise UserError(
            f"reading {path} needs PyTorch (pip install torch); a .safetensors file of the same "
            "weights needs only the safetensors package."
        ) from None
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for files that are not weights
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a PyTorch state dict: {first_line}") from None
    # Training scripts often save {"state_dict": ...} or {"model": ...}, and DataParallel
    # prefixes every name with "module.".
    if isinstance(loaded, dict) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        loaded = loaded.get("state_dict", loaded.get("model", loaded))
    if not isinstance(loaded, dict) or not loaded:
        raise UserError(f"{path} holds no state dict (a mapping of tensor names to tensors).")
    return {
        name.removeprefix("module."): (
            tensor.detach().float().numpy() if tensor.is_floating_point() else tensor.numpy()
        )
        for name, tensor in loaded.items()
        if isinstance(tensor, torch.Tensor)
    }


@dataclasses.dataclass(frozen=True)
class SourceTensor:
    """One tensor of a weights source, laid out for recog where its layout is known."""

    name: str  # as the source names it: "layer1.0.conv1.weight"; a work directory's recog path
    shape: tuple[int, ...]  # in the source's layout
    array: np.ndarray


def to_recog(
    state_dict: dict[str, np.ndarray], converter, target_shapes: dict[str, tuple[int, ...]]
) -> dict[str, SourceTensor]:
    """The state dict's tensors by recog path ('blocks/0/conv1/kernel'), laid out to fit
    `target_shapes` where the rules above allow; whatever does not fit is left as it is, for the
    caller to report."""
    tensors = {}
    for name, array in state_dict.items():
        module, _, leaf = name.rpartition(".")
        if leaf in DROPPED_LEAVES:
            continue
        prefix = f"{converter(module)}/" if module else ""
        if leaf == "weight":
            leaf = "kernel" if f"{prefix}kernel" in target_shapes else "scale"
        path = prefix + LEAF_NAMES.get(leaf, leaf)
        if path in tensors:
            raise UserError(f"{tensors[path].name} and {name} both convert to recog's {path}.")
        target = target_shapes.get(path)
        laid_out = array if target is None else _fit(array, target)
        tensors[path] = SourceTensor(name, array.shape, laid_out)
    return tensors


def _fit(array: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    if array.ndim == 4 and len(target) == 4:  # convolution: OIHW -> HWIO
        array = array.transpose(2, 3, 1, 0)
    elif array.ndim in (2, 4) and len(target) == 2:  # linear, or a 1x1 convolution: (out, in)
        array = array.reshape(array.shape[0], -1).T
    elif array.ndim > len(target) and tuple(d for d in array.shape if d != 1) == target:
        array = array.reshape(target)
    return array


def torchvision_resnet(blocks_per_stage: tuple[int, ...]):
    """torchvision's (and timm's) ResNet module names -> recog's resnet: `conv1`, `bn1`,
    `layerS.I.{convJ,bnJ,downsample.0,downsample.1}`, `fc`."""
    first_block = np.cumsum((0, *blocks_per_stage))

    def convert(module: str) -> str:
        match = re.fullmatch(r"layer([1-4])\.(\d+)\.(.+)", module)
        if match is None:
            return {"conv1": "stem_conv", "bn1": "stem_bn", "fc": "head"}.get(module, module)
        stage, index, rest = int(match[1]) - 1, int(match[2]), match[3]
        if index >= blocks_per_stage[stage]:
            return module  # a deeper ResNet's block: reported as unexpected
        block = int(first_block[stage]) + index
        return f"blocks/{block}/" + rest.replace("downsample.", "projection/layers/")

    return convert


for _name, _blocks in RESNET_BLOCKS.items():
    TORCH_CONVERTERS.register(_name)(torchvision_resnet(_blocks))
