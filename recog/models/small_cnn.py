"""A small plain CNN for quick runs and small images (digits, CIFAR-sized inputs)."""

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from recog.models.layers import max_pool
from recog.registry import MODELS


class SmallCNN(nnx.Module):
    """Stages of two 3x3 conv-BN-ReLU layers, 2x2 max-pooling between stages, global average pool.

    With widths (32, 64, 128) it has about 0.29M parameters. Without batch_norm the convolutions
    have biases instead (a model whose output for one example does not depend on the others).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        dtype: str = "float32",
        batch_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        convs, norms = [], []
        channels = in_channels
        for width in widths:
            for _ in range(2):
                convs.append(
                    nnx.Conv(
                        channels,
                        width,
                        (3, 3),
                        use_bias=not batch_norm,
                        dtype=self.dtype,
                        rngs=rngs,
                    )
                )
                if batch_norm:
                    norms.append(nnx.BatchNorm(width, momentum=0.9, dtype=self.dtype, rngs=rngs))
                channels = width
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms)
        self.num_stages = len(widths)
        self.head = nnx.Linear(channels, num_classes, dtype=self.dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.classify(self.features(x))

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """The last stage's NHWC feature map, before pooling (what Grad-CAM explains)."""
        x = x.astype(self.dtype)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms:
                x = self.norms[i](x)
            x = nnx.relu(x)
            if i % 2 == 1 and i // 2 < self.num_stages - 1:
                x = max_pool(x, (2, 2), (2, 2), ((0, 0), (0, 0)))
        return x

    def classify(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        """Logits of a feature map: global average pool, linear classifier."""
        return self.head(feature_map.mean(axis=(1, 2))).astype(jnp.float32)


@MODELS.register("small_cnn")
def small_cnn(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> SmallCNN:
    """Plain 3x3 conv-BN-ReLU stages with max-pooling, for quick runs and small images."""
    return SmallCNN(num_classes, rngs=rngs, **kwargs)
