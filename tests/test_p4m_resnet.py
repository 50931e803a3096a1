"""The p4m ResNet gives the same logits for an image and its quarter turns and mirror images, and
each of its layers is equivariant: turning the input turns the feature maps and permutes their
orientations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recog import MODELS
from recog.models import p4m_resnet


def every_view():
    """Each group element as a function that turns and mirrors NHWC images."""
    return [
        functools.partial(p4m_resnet.transform, element=element, axes=(1, 2))
        for element in p4m_resnet.ELEMENTS
    ]


def turned_features(features: jnp.ndarray, g: int) -> jnp.ndarray:
    """The group element g acting on feature maps (N, H, W, 8 * C): each orientation channel
    turned, and orientation h taking what orientation g^-1 h held."""
    n, h, w, channels = features.shape
    oriented = features.reshape(n, h, w, p4m_resnet.ORIENTATIONS, -1)
    oriented = p4m_resnet.transform(oriented, p4m_resnet.ELEMENTS[g], (1, 2))
    inverse = [row.tolist().index(0) for row in p4m_resnet.inverse_times()]
    source = p4m_resnet.inverse_times()[inverse[g]]  # g^-1 h, for every h
    return oriented[:, :, :, source].reshape(n, w if g % 2 else h, h if g % 2 else w, channels)


@pytest.mark.parametrize("lifting", [True, False])
def test_each_convolution_is_equivariant(lifting):
    in_channels = 3 if lifting else 2
    conv = p4m_resnet.equivariant_conv(
        in_channels, 4, 3, lifting=lifting, dtype=jnp.float32, rngs=nnx.Rngs(0)
    )
    conv.precision = jax.lax.Precision.HIGHEST
    channels = in_channels if lifting else p4m_resnet.ORIENTATIONS * in_channels
    x = jax.random.normal(jax.random.key(1), (2, 7, 6, channels))
    for g, view in enumerate(every_view()):
        turned_input = view(x) if lifting else turned_features(x, g)
        np.testing.assert_allclose(
            conv(turned_input), turned_features(conv(x), g), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize(("train", "head_width"), [(False, None), (True, 16)])
def test_logits_are_the_same_for_every_turn_and_mirror_image(train, head_width):
    model = MODELS.get("p4m_resnet18")(
        num_classes=3, width=2, head_width=head_width, rngs=nnx.Rngs(0)
    )
    model.train() if train else model.eval()
    graphdef, state = nnx.split(model)

    @jax.jit
    def logits(state, images):
        return nnx.merge(graphdef, state, copy=True)(images)

    images = jax.random.normal(jax.random.key(2), (4, 64, 96, 3))  # not square
    upright = logits(state, images)
    for view in every_view():
        np.testing.assert_allclose(logits(state, view(images)), upright, atol=1e-5)
    # ... which a plain ResNet is not
    plain = nnx.split(MODELS.get("resnet18")(num_classes=3, width=4, rngs=nnx.Rngs(0)))
    turned = jnp.rot90(images, 1, axes=(1, 2))
    forward = jax.jit(lambda s, x: nnx.merge(plain[0], s)(x))
    assert not np.allclose(forward(plain[1], turned), forward(plain[1], images), atol=1e-3)


def test_the_input_side_must_be_a_multiple_of_32():
    model = MODELS.get("p4m_resnet18")(num_classes=2, width=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="multiples of 32"):
        model(jnp.zeros((1, 48, 64, 3)))
