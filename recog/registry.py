"""One Registry type for every kind of named thing: models, datasets, augmentations.

@MODELS.register("small_cnn")
def small_cnn(num_classes, *, rngs, **kwargs): ...

model = MODELS.get("small_cnn")(num_classes=10, rngs=nnx.Rngs(0))
"""

from collections.abc import Callable, Iterator
from typing import Any

from recog.errors import UserError, unknown_name_message


def _origin(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry:
    """Maps names to constructors of one kind. Names are unique; lookups suggest close matches."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str | None = None) -> Callable[[Any], Any]:
        """Decorator that adds a function or class under `name` (default: its own name)."""

        def add(obj: Any) -> Any:
            key = name or obj.__name__
            existing = self._entries.get(key)
            if existing is not None and existing is not obj:
                raise UserError(
                    f"{self.kind} {key!r} is already registered by {_origin(existing)}; "
                    f"{_origin(obj)} must use another name."
                )
            self._entries[key] = obj
            return obj

        return add

    def get(self, name: str) -> Any:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(unknown_name_message(self.kind, name, self._entries)) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


MODELS = Registry("model")
DATASETS = Registry("dataset")
AUGMENTATIONS = Registry("augmentation")

ALL = (MODELS, DATASETS, AUGMENTATIONS)
