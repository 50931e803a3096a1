"""Built-in models; importing this package registers them."""

from recog.models import p4m_resnet, preact_resnet, resnet, small_cnn, wide_resnet  # noqa: F401
