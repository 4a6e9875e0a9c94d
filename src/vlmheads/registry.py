"""One small registry type for everything the suite looks up by name (datasets, locate methods,
intervene methods): ``REG.register(name, value)`` or ``@REG.register(name)``; ``REG[name]`` fails
with the list of known names."""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from .errors import InputError

T = TypeVar("T")


class UnknownName(InputError):
    """A name that is not in a registry."""


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, value: T | None = None):
        """Add ``value`` under ``name``; without ``value``, a decorator that adds what it decorates."""
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item
        return add if value is None else add(value)

    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            raise UnknownName(f"unknown {self.kind} {name!r}; choose from {', '.join(self._items)}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()
