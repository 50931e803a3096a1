"""Example model plugin: MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and
Linear Bottlenecks"), in Flax NNX.

Written only against recog's public API (`from recog import MODELS`), like a plugin of your own.
Every module in this folder is loaded at start-up; pick the model from the config:

    python -m recog.main --experiment=... --config.model.name=mobilenet_v2

Inverted residual blocks: a 1x1 convolution widens the channels, a depthwise 3x3 filters them,
and a linear (no activation) 1x1 narrows them again, with the residual between the narrow ends.
Laid out as torchvision builds it, at width multiplier 1.0; `--config.init_from=FILE` reads
torchvision's mobilenet_v2 weights (the converter below).
"""

import re

import jax
import jax.numpy as jnp
from flax import nnx

from recog import MODELS, TORCH_CONVERTERS

# (expand ratio, output channels, number of blocks, stride of the first block), from the paper
STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
HE_NORMAL_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


class ConvBN(nnx.Module):
    """Bias-free convolution, BatchNorm, then ReLU6 unless `linear`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        linear: bool = False,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
            in_channels,
            out_channels,
            (kernel_size, kernel_size),
            strides=stride,
            padding=kernel_size // 2,
            feature_group_count=groups,
            use_bias=False,
            kernel_init=HE_NORMAL_FAN_OUT,
            dtype=dtype,
            rngs=rngs,
        )
        self.norm = nnx.BatchNorm(out_channels, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.linear = linear

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = self.norm(self.conv(x))
        return x if self.linear else jax.nn.relu6(x)


class InvertedResidual(nnx.Module):
    """1x1 expand, depthwise 3x3 (strided), linear 1x1 project; residual where shapes match."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        expand_ratio: int,
        stride: int,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        hidden = in_channels * expand_ratio
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBN(in_channels, hidden, 1, dtype=dtype, rngs=rngs))
        layers += [
            ConvBN(hidden, hidden, 3, stride=stride, groups=hidden, dtype=dtype, rngs=rngs),
            ConvBN(hidden, out_channels, 1, linear=True, dtype=dtype, rngs=rngs),
        ]
        self.layers = nnx.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = self.layers(x)
        return x + y if self.residual else y


class MobileNetV2(nnx.Module):
    """Stem (3x3 stride-2 conv, 32 channels), 17 inverted residual blocks, 1x1 conv to 1280
    channels, global average pool, dropout, linear classifier."""

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 3,
        dropout_rate: float = 0.2,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        layers = [ConvBN(in_channels, 32, 3, stride=2, dtype=self.dtype, rngs=rngs)]
        channels = 32
        for expand_ratio, out_channels, repeats, stride in STAGES:
            for index in range(repeats):
                layers.append(
                    InvertedResidual(
                        channels,
                        out_channels,
                        expand_ratio=expand_ratio,
                        stride=stride if index == 0 else 1,
                        dtype=self.dtype,
                        rngs=rngs,
                    )
                )
                channels = out_channels
        layers.append(ConvBN(channels, 1280, 1, dtype=self.dtype, rngs=rngs))
        # `features` (the NHWC map before pooling) and `classify` are what Grad-CAM needs.
        self.features = nnx.Sequential(*layers)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.head = nnx.Linear(1280, num_classes, dtype=self.dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.classify(self.features(x.astype(self.dtype)))

    def classify(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        """Logits of a feature map: global average pool, dropout, linear classifier."""
        return self.head(self.dropout(feature_map.mean(axis=(1, 2)))).astype(jnp.float32)


@MODELS.register("mobilenet_v2")
def mobilenet_v2(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> MobileNetV2:
    """MobileNetV2 (Sandler et al. 2018): 17 inverted residual blocks, ReLU6.

    3.50M parameters at 1000 classes.
    """
    return MobileNetV2(num_classes, rngs=rngs, **kwargs)


# the expand ratio of each inverted residual block, features.layers[1] to [17]
BLOCK_EXPANSIONS = [expand for expand, _, repeats, _ in STAGES for _ in range(repeats)]


@TORCH_CONVERTERS.register("mobilenet_v2")
def torchvision_mobilenet_v2(module: str) -> str:
    """torchvision's mobilenet_v2 module names -> this model's: `features.I.{0,1}` (the first and
    last conv-BN), `features.I.conv.J.{0,1}` (a block's conv-BN-ReLU6), `features.I.conv.J` (its
    linear conv, then its BN), `classifier.1`."""
    if module == "classifier.1":
        return "head"
    match = re.fullmatch(r"features\.(\d+)\.([01])", module)
    if match and int(match[1]) in (0, len(BLOCK_EXPANSIONS) + 1):
        return f"features/layers/{match[1]}/" + ("norm" if match[2] == "1" else "conv")
    match = re.fullmatch(r"features\.(\d+)\.conv\.(\d)(\.[01])?", module)
    if match is None or not 1 <= int(match[1]) <= len(BLOCK_EXPANSIONS):
        return module
    layer, index, part = int(match[1]), int(match[2]), match[3]
    block = f"features/layers/{layer}/layers/layers"
    if part is not None:
        return f"{block}/{index}/" + ("norm" if part == ".1" else "conv")
    linear = 1 if BLOCK_EXPANSIONS[layer - 1] == 1 else 2  # after the depthwise conv-BN-ReLU6
    return f"{block}/{linear}/" + ("conv" if index == linear else "norm")
