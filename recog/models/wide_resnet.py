"""Wide ResNet (Zagoruyko & Komodakis 2016, "Wide Residual Networks") for 32x32 images.

WRN-d-k: a 3x3 conv stem of 16 channels and no down-sampling, then three stages of
(d - 4) / 6 pre-activation basic blocks of widths 16k, 32k, 64k at 32, 16 and 8 px, final BN-ReLU,
global average pool, linear classifier. `dropout_rate` (the paper uses 0.3 on some sets) drops
activations between the two convolutions of each block.
"""

import jax.numpy as jnp
from flax import nnx

from recog.models.layers import batch_norm, conv, stages
from recog.models.preact_resnet import PreActBasicBlock
from recog.registry import MODELS


class WideResNet(nnx.Module):
    """WRN-`depth`-`widen_factor`, laid out as the module docstring says."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int,
        *,
        in_channels: int = 3,
        dropout_rate: float = 0.0,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        if (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n + 4, got {depth}.")
        self.dtype = jnp.dtype(dtype)
        blocks_per_stage = ((depth - 4) // 6,) * 3
        widths = tuple(w * widen_factor for w in (16, 32, 64))
        self.stem_conv = conv(in_channels, 16, 3, dtype=self.dtype, rngs=rngs)
        self.blocks, channels = stages(
            PreActBasicBlock,
            blocks_per_stage,
            widths,
            16,
            dropout_rate=dropout_rate,
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
        x = self.stem_conv(x.astype(self.dtype))
        for block in self.blocks:
            x = block(x)
        return nnx.relu(self.final_bn(x))

    def classify(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        """Logits of a feature map: global average pool, linear classifier."""
        return self.head(feature_map.mean(axis=(1, 2))).astype(jnp.float32)


@MODELS.register("wrn28_10")
def wrn28_10(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> WideResNet:
    """WRN-28-10 (Zagoruyko & Komodakis 2016) for 32x32 images.

    36.5M parameters at 10 classes.
    """
    return WideResNet(28, 10, num_classes, rngs=rngs, **kwargs)


@MODELS.register("wrn16_4")
def wrn16_4(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> WideResNet:
    """WRN-16-4 (Zagoruyko & Komodakis 2016) for 32x32 images.

    2.75M parameters at 10 classes.
    """
    return WideResNet(16, 4, num_classes, rngs=rngs, **kwargs)
