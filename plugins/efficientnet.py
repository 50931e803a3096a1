"""Example model plugin: EfficientNet-B0 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling
for Convolutional Neural Networks"), in Flax NNX.

Written only against recog's public API (`from recog import MODELS`), like a plugin of your own.
Every module in this folder is loaded at start-up; pick the model and its options from the config:

    python -m recog.main --experiment=... --config.model.name=efficientnet_b0 \
        --config.model.drop_path_rate=0.2 --config.model.dropout_rate=0.2

B0 is the network found by architecture search that the larger EfficientNets scale up: MBConv
blocks (inverted bottlenecks with depthwise convolutions and squeeze-and-excitation), SiLU,
stochastic depth on the residual blocks and dropout before the classifier. Laid out as
torchvision builds it (symmetric padding, BatchNorm with PyTorch's defaults);
`--config.init_from=FILE` reads torchvision's efficientnet_b0 weights (the converter below).
"""

import re
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from recog import MODELS, TORCH_CONVERTERS

# (expand ratio, kernel size, stride of the first block, output channels, number of blocks)
B0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
HE_NORMAL_FAN_OUT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


class ConvBN(nnx.Module):
    """Bias-free convolution, BatchNorm, then `activation` (None: linear)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        activation: Callable[[jnp.ndarray], jnp.ndarray] | None = nnx.silu,
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
        self.activation = activation

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = self.norm(self.conv(x))
        return x if self.activation is None else self.activation(x)


class SqueezeExcite(nnx.Module):
    """Rescales channels by a gate computed from their global average (Hu et al. 2018)."""

    def __init__(self, channels: int, squeezed: int, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.reduce = nnx.Linear(channels, squeezed, dtype=dtype, rngs=rngs)
        self.expand = nnx.Linear(squeezed, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        gate = self.expand(nnx.silu(self.reduce(x.mean(axis=(1, 2), keepdims=True))))
        return x * nnx.sigmoid(gate)


class MBConv(nnx.Module):
    """1x1 expand, depthwise k x k (strided), squeeze-and-excitation, 1x1 project; a residual
    sum with stochastic depth where input and output shapes match."""

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
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBN(in_channels, hidden, 1, dtype=dtype, rngs=rngs))
        layers += [
            ConvBN(
                hidden, hidden, kernel_size, stride=stride, groups=hidden, dtype=dtype, rngs=rngs
            ),
            SqueezeExcite(hidden, max(1, in_channels // 4), dtype=dtype, rngs=rngs),
            ConvBN(hidden, out_channels, 1, activation=None, dtype=dtype, rngs=rngs),
        ]
        self.layers = nnx.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels
        if self.residual:
            # Dropout with a mask shared over H, W, C drops the whole branch per example:
            # stochastic depth (Huang et al. 2016). It draws from `rngs`; off in eval mode.
            self.drop_path = nnx.Dropout(drop_path_rate, broadcast_dims=(1, 2, 3), rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = self.layers(x)
        return x + self.drop_path(y) if self.residual else y


class EfficientNetB0(nnx.Module):
    """Stem (3x3 stride-2 conv-BN-SiLU, 32 channels), 16 MBConv blocks in 7 stages, 1x1 conv to
    1280 channels, global average pool, dropout, linear classifier.

    Stochastic depth grows linearly with the block index, to just under `drop_path_rate` at the
    last block (torchvision's schedule).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 3,
        drop_path_rate: float = 0.2,
        dropout_rate: float = 0.2,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        block_configs = [
            (expand_ratio, kernel_size, stride if index == 0 else 1, out_channels)
            for expand_ratio, kernel_size, stride, out_channels, repeats in B0_STAGES
            for index in range(repeats)
        ]
        blocks = [ConvBN(in_channels, 32, 3, stride=2, dtype=self.dtype, rngs=rngs)]
        channels = 32
        for index, (expand_ratio, kernel_size, stride, out_channels) in enumerate(block_configs):
            blocks.append(
                MBConv(
                    channels,
                    out_channels,
                    expand_ratio=expand_ratio,
                    kernel_size=kernel_size,
                    stride=stride,
                    drop_path_rate=drop_path_rate * index / len(block_configs),
                    dtype=self.dtype,
                    rngs=rngs,
                )
            )
            channels = out_channels
        blocks.append(ConvBN(channels, 1280, 1, dtype=self.dtype, rngs=rngs))
        # `features` (the NHWC map before pooling) and `classify` are what Grad-CAM needs.
        self.features = nnx.Sequential(*blocks)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.head = nnx.Linear(1280, num_classes, dtype=self.dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.classify(self.features(x.astype(self.dtype)))

    def classify(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        """Logits of a feature map: global average pool, dropout, linear classifier."""
        return self.head(self.dropout(feature_map.mean(axis=(1, 2)))).astype(jnp.float32)


@MODELS.register("efficientnet_b0")
def efficientnet_b0(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> EfficientNetB0:
    """EfficientNet-B0 (Tan & Le 2019): 16 MBConv blocks, SiLU, squeeze-excite.

    5.29M parameters at 1000 classes.
    """
    return EfficientNetB0(num_classes, rngs=rngs, **kwargs)


# torchvision's features.S (stage S of B0_STAGES) begins at this model's features.layers[...]
STAGE_START = np.cumsum([1] + [repeats for *_, repeats in B0_STAGES])


@TORCH_CONVERTERS.register("efficientnet_b0")
def torchvision_efficientnet_b0(module: str) -> str:
    """torchvision's efficientnet_b0 module names -> this model's: `features.0.{0,1}` and
    `features.8.{0,1}` (the first and last conv-BN), `features.S.B.block.J.{0,1,fc1,fc2}` (block B
    of stage S: conv, BN, squeeze-excite's reduce and expand), `classifier.1`."""
    if module == "classifier.1":
        return "head"
    last = len(B0_STAGES) + 1
    match = re.fullmatch(r"features\.(\d+)\.([01])", module)
    if match and int(match[1]) in (0, last):
        layer = int(STAGE_START[-1]) if int(match[1]) == last else 0
        return f"features/layers/{layer}/" + ("norm" if match[2] == "1" else "conv")
    match = re.fullmatch(r"features\.(\d+)\.(\d+)\.block\.(\d+)\.(0|1|fc1|fc2)", module)
    if match is None or not 1 <= int(match[1]) < last:
        return module
    layer = int(STAGE_START[int(match[1]) - 1]) + int(match[2])
    part = {"0": "conv", "1": "norm", "fc1": "reduce", "fc2": "expand"}[match[4]]
    return f"features/layers/{layer}/layers/layers/{match[3]}/{part}"
