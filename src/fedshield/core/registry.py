"""One registry type for everything chosen by name in a config: attacks, defenses, post-training methods,
datasets, partitions, models.

An entry is any object (usually a class or a function); its name is given or taken from its ``name``
attribute, and its one-line summary from ``summary`` or the first line of its docstring.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, Optional, TypeVar

from .errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → entry, for one ``kind`` of thing (the word used in error messages and listings)."""

    def __init__(self, kind: str, error: type[Exception] = ConfigError):
        self.kind = kind
        self.error = error  # raised by get() for an unknown name
        self._entries: dict[str, T] = {}
        self._summaries: dict[str, str] = {}

    def register(self, entry: T, name: Optional[str] = None, summary: Optional[str] = None) -> T:
        """Add ``entry`` under ``name`` (default ``entry.name``); returns it, so it works as a class decorator."""
        key = name if name is not None else getattr(entry, "name", "")
        if not key:
            raise ValueError(f"{getattr(entry, '__name__', entry)!r} has no name")
        if key in self._entries and self._entries[key] is not entry:
            raise ValueError(f"{self.kind} name {key!r} registered twice")
        self._entries[key] = entry
        doc = (getattr(entry, "__doc__", None) or "").strip().splitlines()
        self._summaries[key] = summary or getattr(entry, "summary", "") or (doc[0] if doc else "")
        return entry

    def add(self, name: str, summary: str = "") -> Callable[[T], T]:
        """Decorator form with an explicit name: ``@REGISTRY.add("iid", "...")``."""
        return lambda entry: self.register(entry, name, summary or None)

    def get(self, name: str) -> T:
        """The entry called ``name``; ``self.error`` listing the available names otherwise."""
        if not isinstance(name, str) or name not in self._entries:
            raise self.error(f"unknown {self.kind} {name!r}; available: {self.names()}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> dict[str, T]:
        """Name → entry, sorted by name."""
        return {k: self._entries[k] for k in self.names()}

    def summary(self, name: str) -> str:
        self.get(name)
        return self._summaries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
