"""ResNets that are invariant to quarter turns and mirror images by construction: group-equivariant
convolutions over p4m (Cohen and Welling 2016, "Group Equivariant Convolutional Networks").

Each feature is computed in the 8 orientations of the square's symmetry group D4 (4 quarter
turns, each mirrored or not) with one shared filter turned and mirrored: a lifting convolution
turns an image into 8 orientation channels per feature, group convolutions map those to 8 per
feature again, BatchNorm shares each feature's statistics and affine parameters over its
orientations, and the head averages over positions and orientations. An image and its turns and
mirror images therefore get the same logits (float rounding aside) without the network having
to learn that from augmented data, and a filter learnt in one orientation serves all eight.

Exactly so only because every downsampling is a 2x2 pooling: a stride-2 convolution samples
pixels 0, 2, 4, ..., which a turn moves onto odd ones. The input's height and width must thus be
multiples of 32. Feature maps hold `8 * width` channels, orientation-major (channel g * C + c is
feature c in orientation g); their convolutions cost what a plain ResNet's of 8 times the width
cost, with an eighth of its parameters. The ResNet-D shortcut (average pooling before the 1x1
convolution) and an average-pooled stem input keep the rest of ResNet-18's shape.
"""

import functools
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from recog.models.layers import batch_norm, conv_general_dilated, max_pool
from recog.registry import MODELS

# The group's elements as (quarter turns anticlockwise, mirrored first).
ELEMENTS = tuple((turns, mirrored) for mirrored in (False, True) for turns in range(4))
ORIENTATIONS = len(ELEMENTS)
HE_NORMAL_FAN_IN = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


def transform(x, element: tuple[int, bool], axes: tuple[int, int]):
    """x turned and mirrored by a group element on its two spatial `axes` (rows, columns)."""
    turns, mirrored = element
    if mirrored:
        x = jnp.flip(x, axes[1])
    return jnp.rot90(x, turns, axes=axes)


@functools.cache
def inverse_times() -> np.ndarray:
    """table[g, h] = the index of g^-1 h: which orientation of the input filter the output
    orientation g reads in input orientation h."""
    probe = np.arange(9).reshape(3, 3)  # no symmetry of the square maps it onto itself

    def apply(g: int, array: np.ndarray) -> np.ndarray:  # numpy: also called while tracing
        turns, mirrored = ELEMENTS[g]
        return np.rot90(np.flip(array, 1) if mirrored else array, turns)

    images = [apply(g, probe) for g in range(ORIENTATIONS)]

    def index(array: np.ndarray) -> int:
        return next(i for i, image in enumerate(images) if np.array_equal(image, array))

    inverse = [
        index(next(im for im in images if np.array_equal(apply(g, im), probe)))
        for g in range(ORIENTATIONS)
    ]
    return np.array(
        [
            [index(apply(inverse[g], images[h])) for h in range(ORIENTATIONS)]
            for g in range(ORIENTATIONS)
        ],
        np.int32,
    )


def lifted_kernel(kernel: jnp.ndarray) -> jnp.ndarray:
    """(k, k, in, out) -> (k, k, in, 8 * out): the filter in every orientation."""
    turned = [transform(kernel, element, (0, 1)) for element in ELEMENTS]
    k, _, cin, cout = kernel.shape
    return jnp.stack(turned, axis=3).reshape(k, k, cin, ORIENTATIONS * cout)


def group_kernel(kernel: jnp.ndarray) -> jnp.ndarray:
    """(k, k, 8 * in, out) -> (k, k, 8 * in, 8 * out): for output orientation g, the filter
    turned by g, its input orientations h reading the filter's orientation g^-1 h."""
    k, _, channels, cout = kernel.shape
    kernel = kernel.reshape(k, k, ORIENTATIONS, channels // ORIENTATIONS, cout)
    table = inverse_times()
    turned = [
        transform(kernel[:, :, table[g]], element, (0, 1)) for g, element in enumerate(ELEMENTS)
    ]
    return jnp.stack(turned, axis=4).reshape(k, k, channels, ORIENTATIONS * cout)


def equivariant_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    lifting: bool = False,
    dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """A bias-free stride-1 convolution padded by kernel_size // 2, from `in_channels` (image
    channels if `lifting`, else features in 8 orientations) to `out_channels` features in 8
    orientations. Its parameter is the one filter; the layer turns and mirrors it on each call."""
    expand = lifted_kernel if lifting else group_kernel

    def convolve(lhs, rhs, *args, **kwargs):
        return conv_general_dilated(lhs, expand(rhs), *args, **kwargs)

    return nnx.Conv(
        in_channels if lifting else ORIENTATIONS * in_channels,
        out_channels,
        (kernel_size, kernel_size),
        padding=kernel_size // 2,
        use_bias=False,
        kernel_init=HE_NORMAL_FAN_IN,
        dtype=dtype,
        conv_general_dilated=convolve,
        rngs=rngs,
    )


class OrientedBatchNorm(nnx.Module):
    """BatchNorm of features in 8 orientations: one mean, variance, scale and bias per feature."""

    def __init__(self, features: int, *, zero_scale: bool = False, dtype, rngs: nnx.Rngs):
        self.norm = batch_norm(features, zero_scale=zero_scale, dtype=dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        *outer, channels = x.shape
        oriented = x.reshape(*outer, ORIENTATIONS, channels // ORIENTATIONS)
        return self.norm(oriented).reshape(x.shape)


def average_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    return max_pool(x, (2, 2), (2, 2), ((0, 0), (0, 0)))


class EquivariantBlock(nnx.Module):
    """ResNet's basic block over orientations; a downsampling block average-pools first, in its
    main path and in its (1x1 convolution) shortcut."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        downsample: bool,
        *,
        zero_init_residual: bool,
        dtype: jnp.dtype,
        rngs: nnx.Rngs,
    ):
        self.downsample = downsample
        self.conv1 = equivariant_conv(in_channels, width, 3, dtype=dtype, rngs=rngs)
        self.bn1 = OrientedBatchNorm(width, dtype=dtype, rngs=rngs)
        self.conv2 = equivariant_conv(width, width, 3, dtype=dtype, rngs=rngs)
        self.bn2 = OrientedBatchNorm(width, zero_scale=zero_init_residual, dtype=dtype, rngs=rngs)
        self.projection = (
            nnx.Sequential(
                equivariant_conv(in_channels, width, 1, dtype=dtype, rngs=rngs),
                OrientedBatchNorm(width, dtype=dtype, rngs=rngs),
            )
            if downsample or in_channels != width
            else None
        )

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.downsample:
            x = average_pool_2x2(x)
        shortcut = x if self.projection is None else self.projection(x)
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + shortcut)


class P4MResNet(nnx.Module):
    """Stem (2x2 average pool, 5x5 lifting conv-BN-ReLU, 2x2 max pool: a quarter of the input
    side, as ResNet's stride-2 stem), four stages of `width` times 1, 2, 4 and 8 features in 8
    orientations each, average over positions and orientations, linear classifier."""

    def __init__(
        self,
        blocks_per_stage: Sequence[int],
        num_classes: int,
        *,
        in_channels: int = 3,
        width: int = 8,
        zero_init_residual: bool = True,
        head_width: int | None = None,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        self.stem_conv = equivariant_conv(
            in_channels, width, 5, lifting=True, dtype=self.dtype, rngs=rngs
        )
        self.stem_bn = OrientedBatchNorm(width, dtype=self.dtype, rngs=rngs)
        blocks, channels = [], width
        for stage, num_blocks in enumerate(blocks_per_stage):
            for index in range(num_blocks):
                downsample = stage > 0 and index == 0
                block = EquivariantBlock(
                    channels,
                    width * 2**stage,
                    downsample,
                    zero_init_residual=zero_init_residual,
                    dtype=self.dtype,
                    rngs=rngs,
                )
                blocks.append(block)
                channels = width * 2**stage
        self.blocks = nnx.List(blocks)
        # Averaging over orientations leaves `channels` invariant features; a 1x1 group
        # convolution first can widen that bottleneck.
        self.head_conv = (
            nnx.Sequential(
                equivariant_conv(channels, head_width, 1, dtype=self.dtype, rngs=rngs),
                OrientedBatchNorm(head_width, dtype=self.dtype, rngs=rngs),
                nnx.relu,
            )
            if head_width
            else None
        )
        channels = head_width or channels
        self.head = nnx.Linear(channels, num_classes, dtype=self.dtype, rngs=rngs)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.classify(self.features(x))

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """The last stage's NHWC feature map (8 orientations of each feature), before pooling
        (what Grad-CAM explains)."""
        if x.shape[1] % 32 or x.shape[2] % 32:
            raise ValueError(
                f"p4m ResNets take images whose height and width are multiples of 32 (their "
                f"five 2x2 poolings keep them invariant to turns), not {x.shape[1]}x{x.shape[2]}."
            )
        x = average_pool_2x2(x.astype(self.dtype))
        x = max_pool_2x2(nnx.relu(self.stem_bn(self.stem_conv(x))))
        for block in self.blocks:
            x = block(x)
        return x

    def classify(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        """Logits of a feature map: average over positions and orientations, linear classifier."""
        if self.head_conv is not None:
            feature_map = self.head_conv(feature_map)
        pooled = feature_map.mean(axis=(1, 2))
        pooled = pooled.reshape(len(pooled), ORIENTATIONS, -1).mean(axis=1)
        return self.head(pooled).astype(jnp.float32)


@MODELS.register("p4m_resnet18")
def p4m_resnet18(num_classes: int, *, rngs: nnx.Rngs, **kwargs) -> P4MResNet:
    """ResNet-18's blocks (2, 2, 2, 2) as p4m group convolutions: the same logits for an image and
    its quarter turns and mirror images. Height and width must be multiples of 32."""
    return P4MResNet((2, 2, 2, 2), num_classes, rngs=rngs, **kwargs)
