"""Built-in models; importing this package registers them."""

from recog.models import (  # noqa: F401
    efficientnet_lite,
    p4m_resnet,
    preact_resnet,
    resnet,
    small_cnn,
    wide_resnet,
)
