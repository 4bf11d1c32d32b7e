"""Defenses by name: ``@register`` on a class, ``build_defense(name, params, context)`` to make one."""

from __future__ import annotations

from typing import Any, Mapping

from ..core.registry import Registry
from .base import Defense, DefenseContext

__all__ = ["DEFENSES", "register", "available_defenses", "get_defense_class", "build_defense", "validate_defense"]

DEFENSES: Registry[type[Defense]] = Registry("defense")


def register(cls: type[Defense]) -> type[Defense]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    return DEFENSES.register(cls)


def available_defenses() -> dict[str, type[Defense]]:
    """Name → class, sorted by name."""
    return DEFENSES.items()


def get_defense_class(name: str) -> type[Defense]:
    return DEFENSES.get(name)


def validate_defense(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Config-time check of a defense name and its parameters (nothing is built)."""
    return get_defense_class(name).validate(params)


def build_defense(name: str, params: Mapping[str, Any] | None = None, context: DefenseContext | None = None) -> Defense:
    """Construct a registered defense with validated parameters."""
    return get_defense_class(name).from_config(dict(params or {}), context or DefenseContext())
