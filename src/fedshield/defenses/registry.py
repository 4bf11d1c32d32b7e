"""Defenses by name: ``@register`` on a class, ``build_defense(name, params, context)`` to make one."""

from __future__ import annotations

from typing import Any, Mapping

from ..core.errors import ParameterError
from ..core.params import spec_from_signature, validate_params
from ..core.registry import Registry
from .base import Defense, DefenseContext

__all__ = [
    "DEFENSES",
    "POST_TRAINING",
    "register",
    "available_defenses",
    "get_defense_class",
    "build_defense",
    "validate_defense",
    "defense_min_clients",
    "validate_post_training",
    "build_post_training",
]

DEFENSES: Registry[type[Defense]] = Registry("defense")
# Post-training methods (run once on the final model, e.g. FLAIN): classes whose constructor takes the config's
# parameters and that expose ``repair(model, initial_params, final_params, aux_x, aux_y)``.
POST_TRAINING: Registry[type] = Registry("post-training method")


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


def defense_min_clients(name: str, params: Mapping[str, Any] | None) -> int:
    """Config time: the fewest clients per round defense ``name`` with ``params`` aggregates
    (:meth:`Defense.min_clients`); 1 for a defense that cannot be built without the experiment (FLTrust's root
    set, DeepSight's model), whose own checks run when the experiment is set up."""
    try:
        return build_defense(name, params).min_clients()
    except ParameterError:
        return 1


def build_defense(name: str, params: Mapping[str, Any] | None = None, context: DefenseContext | None = None) -> Defense:
    """Construct a registered defense with validated parameters."""
    return get_defense_class(name).from_config(dict(params or {}), context or DefenseContext())


def validate_post_training(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Config-time check of a post-training method and its parameters (keys from the constructor, then its
    value checks; constructing one is cheap)."""
    cls = POST_TRAINING.get(name)
    validate_params(f"post_training {name!r}", spec_from_signature(cls.__init__), params)
    cls(**dict(params or {}))
    return dict(params or {})


def build_post_training(name: str, params: Mapping[str, Any] | None) -> Any:
    validate_post_training(name, params)
    return POST_TRAINING.get(name)(**dict(params or {}))
