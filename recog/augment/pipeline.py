"""Preprocessing pipelines written as strings: `"resize(36)|pad_crop(4)|flip_lr"`.

Each `|`-separated op is a registered augmentation name, optionally called with literal arguments.
A registered augmentation is a factory `f(*args, **kwargs) -> op` where `op(image, seed)` maps an
HxWxC image tensor and a stateless seed (int64[2]) to an image. Every random choice comes from the
seed, so a pipeline's output is a pure function of (image, seed): resumed runs see the same data.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

import tensorflow as tf

from recog.errors import UserError
from recog.registry import AUGMENTATIONS

Op = Callable[["tf.Tensor", "tf.Tensor"], "tf.Tensor"]


def _literal(node: ast.AST, op_text: str):
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise UserError(f"augmentation {op_text!r}: arguments must be literals.") from None


def parse_op(text: str) -> Op:
    text = text.strip()
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise UserError(f"cannot parse augmentation {text!r}; write name or name(args).") from None
    if isinstance(node, ast.Name):
        name, args, kwargs = node.id, [], {}
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        args = [_literal(a, text) for a in node.args]
        kwargs = {k.arg: _literal(k.value, text) for k in node.keywords}
    else:
        raise UserError(f"cannot parse augmentation {text!r}; write name or name(args).")
    factory = AUGMENTATIONS.get(name)
    try:
        return factory(*args, **kwargs)
    except TypeError as e:
        raise UserError(f"augmentation {text!r}: {e}") from None


def parse_image_op(text: str) -> Op:
    op = parse_op(text)
    if getattr(op, "on_device", False):
        raise UserError(
            f"augmentation {text.strip()!r} mixes whole batches on the device; list it in "
            "config.data.batch_pipeline, not in a tf.data pipeline."
        )
    return op


def parse(spec: str) -> list[Op]:
    return [parse_image_op(part) for part in spec.split("|") if part.strip()]


def decode(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    """PNG, JPEG, GIF or BMP bytes -> uint8 HxWx`channels` (a GIF's first frame)."""
    image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def apply(ops: list[Op], image: tf.Tensor, seed: tf.Tensor, channels: int = 3) -> tf.Tensor:
    """Runs the ops in order, each with its own seed; returns uint8 (cheap to copy to devices).

    `image` is a decoded image, or its encoded bytes (a scalar string), which are decoded to
    `channels` channels first: by the first op itself where it can decode only the part it keeps
    (an op with a `decode_and_apply(encoded, channels, seed)` method, such as inception_crop).
    """
    seeds = tf.random.experimental.stateless_split(seed, len(ops)) if ops else []
    first = 0
    if image.dtype == tf.string:
        if ops and hasattr(ops[0], "decode_and_apply"):
            image, first = ops[0].decode_and_apply(image, channels, seeds[0]), 1
        else:
            image = decode(image, channels)
    for i in range(first, len(ops)):
        image = ops[i](image, seeds[i])
    if image.dtype != tf.uint8:
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return image
