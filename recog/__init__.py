"""recog: image recognition with convolutional networks in JAX.

The public API for plugins is the registries:

    from recog import MODELS, TORCH_CONVERTERS

    @MODELS.register("my_net")
    def my_net(num_classes, *, in_channels, rngs, **config_model_keys): ...

    @TORCH_CONVERTERS.register("my_net")  # for --config.init_from=weights.pth
    def my_net_from_torch(module_name: str) -> str: ...  # 'features.0' -> 'layers/0'

    PRETRAINED.register("my_net:imagenet")(PretrainedWeights(...))  # recog/pretrained.py
"""

from recog import startup  # noqa: F401, I001  (before JAX and TensorFlow start)
from recog.registry import AUGMENTATIONS, DATASETS, MODELS, Registry
from recog import augment, data, models  # noqa: F401  (registers the built-ins)
from recog.data.sources import TfdsSource
from recog.errors import UserError
from recog.pretrained import PRETRAINED, PretrainedWeights
from recog.torch_weights import TORCH_CONVERTERS

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "MODELS",
    "PRETRAINED",
    "TORCH_CONVERTERS",
    "PretrainedWeights",
    "Registry",
    "TfdsSource",
    "UserError",
]
