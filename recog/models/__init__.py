"""Built-in models; importing this package registers them."""

from recog.models import small_cnn  # noqa: F401
