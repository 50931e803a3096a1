"""Batch augmentations that run on the device, inside the jit-compiled train step: mixup, cutmix,
and RandAugment (recog.augment.device_randaugment).

They mix images *and* targets, so they see whole batches rather than one tf.data example. A batch
augmentation is a registered factory (in the same AUGMENTATIONS registry) returning

    op(images, targets, key) -> (images, targets)

for float32 NHWC images and float32 [N, classes] targets (one-hot or smoothed): a pure JAX function
of its inputs, marked `op.on_device = True` (see `on_device`), which tells it apart from the
tf.data ops of recog.augment.pipeline. Each example is mixed with its neighbour in the batch (a roll
by one: the batch is already shuffled, and on a sharded batch a roll is a cheap collective
permute); one mixing ratio is drawn per batch. `parse_batch("mixup(0.2)|cutmix(1.0)")` picks one
listed mixing op per batch. An image augmentation that can also run here carries a `batched`
version (`op.batched(images, key) -> images`, for images 0..255): RandAugment does.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from recog.augment.pipeline import parse_op
from recog.errors import UserError
from recog.registry import AUGMENTATIONS

BatchOp = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def on_device(op: BatchOp) -> BatchOp:
    """Marks `op` as a batch augmentation (for plugins that write their own)."""
    op.on_device = True
    return op


def _mix(x, weight):
    """weight * x + (1 - weight) * (x rolled by one along the batch)."""
    weight = weight.astype(x.dtype)
    return weight * x + (1 - weight) * jnp.roll(x, 1, axis=0)


@AUGMENTATIONS.register("mixup")
def mixup(alpha: float = 0.2):
    """On device: blends images and targets with their neighbours (Zhang et al. 2018).

    One weight per batch, drawn from Beta(alpha, alpha).
    """

    def op(images, targets, key):
        weight = jax.random.beta(key, alpha, alpha)
        return _mix(images, weight), _mix(targets, weight)

    return on_device(op)


@AUGMENTATIONS.register("cutmix")
def cutmix(alpha: float = 1.0):
    """On device: pastes a box of the neighbouring image, mixing targets by area (Yun et al. 2019).

    The box has area 1 - w for one w ~ Beta(alpha, alpha) per batch, a uniformly random centre,
    and is clipped to the image; the targets are mixed by the area actually pasted.
    """

    def op(images, targets, key):
        weight_key, y_key, x_key = jax.random.split(key, 3)
        _, height, width, _ = images.shape
        side = jnp.sqrt(1.0 - jax.random.beta(weight_key, alpha, alpha))
        centre_y = jax.random.uniform(y_key, maxval=height)
        centre_x = jax.random.uniform(x_key, maxval=width)
        half_height, half_width = side * height / 2, side * width / 2
        top, bottom = jnp.round(centre_y - half_height), jnp.round(centre_y + half_height)
        left, right = jnp.round(centre_x - half_width), jnp.round(centre_x + half_width)
        rows = jnp.arange(height)[:, None]
        cols = jnp.arange(width)[None, :]
        box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
        pasted = jnp.where(box[None, :, :, None], jnp.roll(images, 1, axis=0), images)
        kept = 1.0 - box.mean()  # the box clipped to the image
        return pasted, _mix(targets, kept)

    return on_device(op)


@dataclasses.dataclass(frozen=True)
class BatchPipeline:
    """config.data.batch_pipeline, compiled into the train step in two parts.

    `augment_images` runs the per-image ops that can run on the device (`randaugment`) in the
    order listed, on images as the host sent them (0..255); `mix` then applies one of the listed
    mixing ops (mixup, cutmix), chosen at random per batch when several are listed, to the
    normalised images and their targets.
    """

    image_ops: tuple[Callable[[jax.Array, jax.Array], jax.Array], ...]
    mix_ops: tuple[BatchOp, ...]

    def augment_images(self, images: jax.Array, key: jax.Array) -> jax.Array:
        images = images.astype(jnp.float32)
        for op, op_key in zip(
            self.image_ops, jax.random.split(key, len(self.image_ops)), strict=True
        ):
            images = op(images, op_key)
        return images

    def mix(self, images: jax.Array, targets: jax.Array, key: jax.Array):
        if not self.mix_ops:
            return images, targets
        if len(self.mix_ops) == 1:
            return self.mix_ops[0](images, targets, key)
        choice_key, op_key = jax.random.split(key)
        index = jax.random.randint(choice_key, (), 0, len(self.mix_ops))
        return jax.lax.switch(index, self.mix_ops, images, targets, op_key)


def parse_batch(spec: str) -> BatchPipeline:
    """`"randaugment(2, 9)|mixup(0.2)|cutmix(1.0)"` -> the BatchPipeline that runs it."""
    image_ops, mix_ops = [], []
    for text in spec.split("|"):
        if not text.strip():
            continue
        op = parse_op(text)
        if getattr(op, "on_device", False):
            mix_ops.append(op)
        elif hasattr(op, "batched"):
            image_ops.append(op.batched)
        else:
            raise UserError(
                f"{text.strip()!r} is an augmentation of single images for the tf.data pipeline, "
                f"not a batch augmentation such as randaugment, mixup or cutmix."
            )
    return BatchPipeline(tuple(image_ops), tuple(mix_ops))
