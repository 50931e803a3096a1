"""Pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks").

BatchNorm and ReLU come before each convolution, so the shortcut path is a pure identity from
the stem to the final BN-ReLU. Laid out as timm's ResNetV2 with BatchNorm: a 7x7 stride-2 conv and
max-pool stem without normalisation, stride on the 3x3 conv of bottlenecks, projection shortcuts
taken from the pre-activated input.
"""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from recog.models.layers import batch_norm, conv, max_pool_3x3_stride_2, stages
from recog.registry import MODELS


def projection(
    in_channels: int, out_channels: int, stride: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
) -> nnx.Conv | None:
    """The 1x1 conv shortcut where a block changes shape; None where identity fits."""
    if stride == 1 and in_channels == out_channels:
        return None
    return conv(in_channels, out_channels, 1, stride=stride, dtype=dtype, rngs=rngs)


class PreActBasicBlock(nnx.Module):
    """BN-ReLU-conv3x3 twice; `dropout_rate` drops activations between the two (Wide ResNet)."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        *,
        dropout_rate: float = 0.0,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.bn1 = batch_norm(in_channels, dtype=dtype, rngs=rngs)
        self.conv1 = conv(in_channels, width, 3, stride=stride, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(width, dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate, rngs=rngs)
        self.conv2 = conv(width, width, 3, dtype=dtype, rngs=rngs)
        self.projection = projection(in_channels, width, stride, dtype=dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        preactivated = nnx.relu(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(preactivated)
        y = self.conv1(preactivated)
        y = self.conv2(self.dropout(nnx.relu(self.bn2(y))))
        return y + shortcut


class PreActBottleneck(nnx.Module):
    """BN-ReLU before each of: 1x1 reduce, 3x3 (strided), 1x1 expand by 4."""

    expansion = 4

    def __init__(
        self, in_channels: int, width: int, stride: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
    ):
        out_channels = width * self.expansion
        self.bn1 = batch_norm(in_channels, dtype=dtype, rngs=rngs)
        self.conv1 = conv(in_channels, width, 1, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(width, dtype=dtype, rngs=rngs)
        self.conv2 = conv(width, width, 3, stride=stride, dtype=dtype, rngs=rngs)
        self.bn3 = batch_norm(width, dtype=dtype, rngs=rngs)
        self.conv3 = conv(width, out_channels, 1, dtype=dtype, rngs=rngs)
        self.projection = projection(in_channels, out_channels, stride, dtype=dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        preactivated = nnx.relu(self.bn1(x))
        shortcut = x if self.projection is None else self.projection(preactivated)
        y = self.conv1(preactivated)
        y = self.conv2(nnx.relu(self.bn2(y)))
        y = self.conv3(nnx.relu(self.bn3(y)))
        return y + shortcut


class PreActResNet(nnx.Module):
    """Stem (7x7 stride-2 conv, 3x3 stride-2 max-pool), four pre-activation stages of `width` (64)
    times 1, 2, 4 and 8 channels (4 times that out of bottlenecks), final BN-ReLU, global average
    pool, linear classifier."""

    def __init__(
        self,
        block: type[PreActBasicBlock | PreActBottleneck],
        blocks_per_stage: Sequence[int],
        num_classes: int,
        *,
        in_channels: int = 3,
        width: int = 64,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        self.stem_conv = conv(in_channels, width, 7, stride=2, dtype=self.dtype, rngs=rngs)
        self.blocks, channels = stages(
            block,
            blocks_per_stage,
            (width, 2 * width, 4 * width, 8 * width),
            width,
            dtype=self.dtype,
            rngs=rngs,
        )
        self.final_bn = batch_norm(channels, dtype=self.dtype, rngs=rngs)
        self.head = nnx.Linear(channels, num_classes, dtype=self.dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.classify(self.features(x))

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """The NHWC feature map after the final BN-ReLU, before pooling (what Grad-CAM
        explains)."""
        x = max_pool_3x3_stride_2(self.stem_conv(x.astype(self.dtype)))
        for block in self.blocks:
            x = block(x)
        return nnx.relu(self.final_bn(x))

    def classify(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        """Logits of a feature map: global average pool, linear classifier."""
        return self.head(feature_map.mean(axis=(1, 2))).astype(jnp.float32)


@MODELS.register("preact_resnet18")
def preact_resnet18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> PreActResNet:
    """Pre-activation ResNet-18 (He et al. 2016): basic blocks (2, 2, 2, 2).

    11.69M parameters at 1000 classes.
    """
    return PreActResNet(PreActBasicBlock, (2, 2, 2, 2), num_classes, rngs=rngs, **kwargs)


@MODELS.register("preact_resnet50")
def preact_resnet50(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> PreActResNet:
    """Pre-activation ResNet-50 (He et al. 2016): bottlenecks (3, 4, 6, 3).

    25.55M parameters at 1000 classes.
    """
    return PreActResNet(PreActBottleneck, (3, 4, 6, 3), num_classes, rngs=rngs, **kwargs)
