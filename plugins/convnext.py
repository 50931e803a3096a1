"""Example model plugin: ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s"), in Flax NNX.

Written only against recog's public API (`from recog import MODELS`), like a plugin of your own.
Every module in this folder is loaded at start-up; pick a model and its options from the config:

    python -m recog.main --experiment=... --config.model.name=convnext_tiny \
        --config.model.drop_path_rate=0.1

ConvNeXt is a ResNet modernised towards vision Transformers: a 4x4 stride-4 "patchify" stem,
stages of depthwise 7x7 blocks with an inverted bottleneck, LayerNorm instead of BatchNorm, GELU,
layer scale and stochastic depth. It needs inputs of at least 32x32 pixels (down-sampling by 32).
`--config.init_from=FILE` reads torchvision's convnext_tiny and convnext_small weights (the
converter below).
"""

import re
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from recog import MODELS, TORCH_CONVERTERS

# The reference implementation initialises every convolution and linear layer like this.
TRUNCATED_NORMAL = nnx.initializers.truncated_normal(stddev=0.02)


def layer_norm(features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm over channels (NHWC's last axis); statistics are computed in float32."""
    return nnx.LayerNorm(features, epsilon=1e-6, dtype=dtype, rngs=rngs)


def patch_conv(
    in_channels: int, out_channels: int, patch_size: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
) -> nnx.Conv:
    """A convolution over non-overlapping patch_size x patch_size patches (the down-sampling)."""
    return nnx.Conv(
        in_channels,
        out_channels,
        (patch_size, patch_size),
        strides=patch_size,
        padding="VALID",
        kernel_init=TRUNCATED_NORMAL,
        dtype=dtype,
        rngs=rngs,
    )


class ConvNeXtBlock(nnx.Module):
    """Depthwise 7x7 conv, LayerNorm, 1x1 expand by 4 (as Linear), GELU, 1x1 project, layer scale,
    then stochastic depth on the residual branch before the sum."""

    def __init__(
        self,
        channels: int,
        *,
        drop_path_rate: float,
        layer_scale_init: float,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.depthwise = nnx.Conv(
            channels,
            channels,
            (7, 7),
            padding=3,
            feature_group_count=channels,
            kernel_init=TRUNCATED_NORMAL,
            dtype=dtype,
            rngs=rngs,
        )
        self.norm = layer_norm(channels, dtype=dtype, rngs=rngs)
        self.expand = nnx.Linear(
            channels, 4 * channels, kernel_init=TRUNCATED_NORMAL, dtype=dtype, rngs=rngs
        )
        self.project = nnx.Linear(
            4 * channels, channels, kernel_init=TRUNCATED_NORMAL, dtype=dtype, rngs=rngs
        )
        self.layer_scale = nnx.Param(jnp.full((channels,), layer_scale_init, jnp.float32))
        # Dropout with a mask shared over H, W, C drops whole residual branches per example:
        # stochastic depth (Huang et al. 2016). It draws from `rngs` and is off in eval mode.
        self.drop_path = nnx.Dropout(drop_path_rate, broadcast_dims=(1, 2, 3), rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        y = self.norm(self.depthwise(x))
        y = self.project(nnx.gelu(self.expand(y), approximate=False))
        y = y * self.layer_scale[...].astype(y.dtype)
        return x + self.drop_path(y)


class ConvNeXt(nnx.Module):
    """Stem (4x4 stride-4 conv, LayerNorm), four stages with a LayerNorm + 2x2 stride-2 conv
    between them, global average pool, LayerNorm, linear classifier.

    Stochastic depth grows linearly from 0 at the first block to `drop_path_rate` at the last.
    """

    def __init__(
        self,
        blocks_per_stage: Sequence[int],
        stage_widths: Sequence[int],
        num_classes: int,
        *,
        in_channels: int = 3,
        drop_path_rate: float = 0.0,
        layer_scale_init: float = 1e-6,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        drop_path_rates = iter(np.linspace(0.0, drop_path_rate, sum(blocks_per_stage)))
        layers = []
        channels = in_channels
        for stage, (depth, width) in enumerate(zip(blocks_per_stage, stage_widths, strict=True)):
            if stage == 0:
                layers += [
                    patch_conv(channels, width, 4, dtype=self.dtype, rngs=rngs),
                    layer_norm(width, dtype=self.dtype, rngs=rngs),
                ]
            else:
                layers += [
                    layer_norm(channels, dtype=self.dtype, rngs=rngs),
                    patch_conv(channels, width, 2, dtype=self.dtype, rngs=rngs),
                ]
            layers += [
                ConvNeXtBlock(
                    width,
                    drop_path_rate=float(next(drop_path_rates)),
                    layer_scale_init=layer_scale_init,
                    dtype=self.dtype,
                    rngs=rngs,
                )
                for _ in range(depth)
            ]
            channels = width
        self.layers = nnx.List(layers)
        self.head_norm = layer_norm(channels, dtype=self.dtype, rngs=rngs)
        self.head = nnx.Linear(
            channels, num_classes, kernel_init=TRUNCATED_NORMAL, dtype=self.dtype, rngs=rngs
        )

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.classify(self.features(x))

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """The last stage's NHWC feature map, before pooling (what Grad-CAM explains)."""
        x = x.astype(self.dtype)
        for layer in self.layers:
            x = layer(x)
        return x

    def classify(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        """Logits of a feature map: global average pool, LayerNorm, linear classifier."""
        x = self.head_norm(feature_map.mean(axis=(1, 2)))
        return self.head(x).astype(jnp.float32)


TINY_BLOCKS = (3, 3, 9, 3)
SMALL_BLOCKS = (3, 3, 27, 3)
WIDTHS = (96, 192, 384, 768)
CLASSIFIER = {"classifier.0": "head_norm", "classifier.2": "head"}  # torchvision's names


@MODELS.register("convnext_tiny")
def convnext_tiny(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ConvNeXt:
    """ConvNeXt-T (Liu et al. 2022): blocks (3, 3, 9, 3), widths 96-768.

    28.59M parameters at 1000 classes.
    """
    return ConvNeXt(TINY_BLOCKS, WIDTHS, num_classes, rngs=rngs, **kwargs)


@MODELS.register("convnext_small")
def convnext_small(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ConvNeXt:
    """ConvNeXt-S (Liu et al. 2022): blocks (3, 3, 27, 3), widths 96-768.

    50.22M parameters at 1000 classes.
    """
    return ConvNeXt(SMALL_BLOCKS, WIDTHS, num_classes, rngs=rngs, **kwargs)


def torchvision_convnext(blocks_per_stage: Sequence[int]):
    """torchvision's convnext_* module names -> this model's: `features.0.{0,1}` (stem conv and
    LayerNorm), `features.{2,4,6}.{0,1}` (LayerNorm and down-sampling conv), `features.{1,3,5,7}.I`
    (blocks, with `block.{0,2,3,5}`: depthwise conv, LayerNorm, expand, project),
    `classifier.{0,2}`."""
    # this model's `layers`: each stage's two down-sampling layers, then its blocks
    stage_start = np.cumsum([0] + [2 + depth for depth in blocks_per_stage])
    block_parts = {"": "", ".block.0": "/depthwise", ".block.2": "/norm"}
    block_parts |= {".block.3": "/expand", ".block.5": "/project"}

    def convert(module: str) -> str:
        if module in CLASSIFIER:
            return CLASSIFIER[module]
        match = re.fullmatch(r"features\.(\d+)\.(\d+)(.*)", module)
        if match is None or int(match[1]) >= 2 * len(blocks_per_stage):
            return module
        feature, index, rest = int(match[1]), int(match[2]), match[3]
        start = int(stage_start[feature // 2])
        if feature % 2 == 0 and not rest:
            return f"layers/{start + index}"
        if feature % 2 == 1 and rest in block_parts:
            return f"layers/{start + 2 + index}{block_parts[rest]}"
        return module

    return convert


TORCH_CONVERTERS.register("convnext_tiny")(torchvision_convnext(TINY_BLOCKS))
TORCH_CONVERTERS.register("convnext_small")(torchvision_convnext(SMALL_BLOCKS))
