"""Named things the user picks by name in a config or on the command line (datasets, baselines, co-training
strategies, devices): one :class:`Registry` each, filled by decorators or a table, looked up with an error
that lists the valid names (as timm's ``create_model`` does)."""
from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from nni_bigLittle.errors import UnknownNameError

__all__ = ['Registry', 'UnknownNameError']

T = TypeVar('T')


class Registry(Generic[T]):
    """``name -> entry`` for one ``kind`` of thing (``Registry('dataset')``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None):
        """``register(name, entry)``, or ``@register(name)`` above a function or class. A name is taken once."""
        def add(value: T) -> T:
            if name in self._entries:
                raise ValueError(f'{self.kind} {name!r} is registered already.')
            self._entries[name] = value
            return value
        return add if entry is None else add(entry)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(f'Unknown {self.kind} {name!r}; choose one of {self.names()}.') from None

    __getitem__ = get

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f'Registry({self.kind!r}: {", ".join(self.names())})'
