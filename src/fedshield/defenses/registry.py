"""Defenses by name: ``@register`` on a class, ``build_defense(name, params, context)`` to make one."""

from __future__ import annotations

from typing import Any, Mapping

from .base import Defense, DefenseContext

_REGISTRY: dict[str, type[Defense]] = {}


def register(cls: type[Defense]) -> type[Defense]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"defense name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available_defenses() -> dict[str, type[Defense]]:
    """Name → class, sorted by name."""
    return dict(sorted(_REGISTRY.items()))


def get_defense_class(name: str) -> type[Defense]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown defense {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def build_defense(name: str, params: Mapping[str, Any] | None = None, context: DefenseContext | None = None) -> Defense:
    """Construct a registered defense with validated parameters."""
    return get_defense_class(name).from_config(dict(params or {}), context or DefenseContext())
