"""ResNet v1.5 (He et al. 2015, "Deep Residual Learning for Image Recognition"), as torchvision
builds it: bottlenecks stride on their 3x3 convolution rather than the first 1x1, which costs a
little compute and gains about 0.5% ImageNet top-1.

Depths 18 and 34 use basic blocks, 50 to 200 bottlenecks. For 224x224 ImageNet-style inputs; the
7x7 stride-2 stem and max-pool shrink 32x32 images to 8x8 before the first stage.
"""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from recog.models.layers import batch_norm, conv, max_pool_3x3_stride_2, stages
from recog.registry import MODELS


def projection(
    in_channels: int, out_channels: int, stride: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
) -> nnx.Sequential | None:
    """The 1x1 conv-BN shortcut where a block changes shape; None where identity fits."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nnx.Sequential(
        conv(in_channels, out_channels, 1, stride=stride, dtype=dtype, rngs=rngs),
        batch_norm(out_channels, dtype=dtype, rngs=rngs),
    )


class BasicBlock(nnx.Module):
    """Two 3x3 conv-BN layers and a shortcut, ReLU after the sum."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        *,
        zero_init_residual: bool,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.conv1 = conv(in_channels, width, 3, stride=stride, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(width, dtype=dtype, rngs=rngs)
        self.conv2 = conv(width, width, 3, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(width, zero_scale=zero_init_residual, dtype=dtype, rngs=rngs)
        self.projection = projection(in_channels, width, stride, dtype=dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shortcut = x if self.projection is None else self.projection(x)
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + shortcut)


class Bottleneck(nnx.Module):
    """1x1 reduce, 3x3 (strided, the v1.5 placement), 1x1 expand by 4; ReLU after the sum."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        *,
        zero_init_residual: bool,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        out_channels = width * self.expansion
        self.conv1 = conv(in_channels, width, 1, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(width, dtype=dtype, rngs=rngs)
        self.conv2 = conv(width, width, 3, stride=stride, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(width, dtype=dtype, rngs=rngs)
        self.conv3 = conv(width, out_channels, 1, dtype=dtype, rngs=rngs)
        self.bn3 = batch_norm(out_channels, zero_scale=zero_init_residual, dtype=dtype, rngs=rngs)
        self.projection = projection(in_channels, out_channels, stride, dtype=dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shortcut = x if self.projection is None else self.projection(x)
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return nnx.relu(y + shortcut)


class ResNet(nnx.Module):
    """Stem (7x7 stride-2 conv-BN-ReLU, 3x3 stride-2 max-pool), four stages of `width` (64) times
    1, 2, 4 and 8 channels (4 times that out of bottlenecks), global average pool, linear
    classifier.

    `zero_init_residual` starts each block's last BatchNorm scale at zero, so every block starts
    as the identity (Goyal et al. 2017); it helps large-batch training.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        blocks_per_stage: Sequence[int],
        num_classes: int,
        *,
        in_channels: int = 3,
        width: int = 64,
        zero_init_residual: bool = True,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        self.stem_conv = conv(in_channels, width, 7, stride=2, dtype=self.dtype, rngs=rngs)
        self.stem_bn = batch_norm(width, dtype=self.dtype, rngs=rngs)
        self.blocks, channels = stages(
            block,
            blocks_per_stage,
            (width, 2 * width, 4 * width, 8 * width),
            width,
            zero_init_residual=zero_init_residual,
            dtype=self.dtype,
            rngs=rngs,
        )
        self.head = nnx.Linear(channels, num_classes, dtype=self.dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.classify(self.features(x))

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """The last stage's NHWC feature map, before pooling (what Grad-CAM explains)."""
        x = nnx.relu(self.stem_bn(self.stem_conv(x.astype(self.dtype))))
        x = max_pool_3x3_stride_2(x)
        for block in self.blocks:
            x = block(x)
        return x

    def classify(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        """Logits of a feature map: global average pool, linear classifier."""
        return self.head(feature_map.mean(axis=(1, 2))).astype(jnp.float32)


@MODELS.register("resnet18")
def resnet18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNet-18 v1.5 (He et al. 2015): basic blocks (2, 2, 2, 2).

    11.69M parameters at 1000 classes.
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, rngs=rngs, **kwargs)


@MODELS.register("resnet34")
def resnet34(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNet-34 v1.5 (He et al. 2015): basic blocks (3, 4, 6, 3).

    21.80M parameters at 1000 classes.
    """
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, rngs=rngs, **kwargs)


@MODELS.register("resnet50")
def resnet50(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNet-50 v1.5 (He et al. 2015): bottlenecks (3, 4, 6, 3).

    25.56M parameters at 1000 classes.
    """
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, rngs=rngs, **kwargs)


@MODELS.register("resnet101")
def resnet101(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNet-101 v1.5 (He et al. 2015): bottlenecks (3, 4, 23, 3).

    44.55M parameters at 1000 classes.
    """
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, rngs=rngs, **kwargs)


@MODELS.register("resnet152")
def resnet152(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNet-152 v1.5 (He et al. 2015): bottlenecks (3, 8, 36, 3).

    60.19M parameters at 1000 classes.
    """
    return ResNet(Bottleneck, (3, 8, 36, 3), num_classes, rngs=rngs, **kwargs)


@MODELS.register("resnet200")
def resnet200(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> ResNet:
    """ResNet-200 v1.5 (He et al. 2016): bottlenecks (3, 24, 36, 3).

    64.67M parameters at 1000 classes.
    """
    return ResNet(Bottleneck, (3, 24, 36, 3), num_classes, rngs=rngs, **kwargs)
