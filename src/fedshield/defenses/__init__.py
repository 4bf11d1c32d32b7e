"""Defenses: one module per defense, each registered by name (see ``registry``)."""

from .base import (Aggregate, Defense, DefenseContext, ParameterError, RoundInput, check_round_input,
                   refuse_non_finite, require)
from .registry import (
    DEFENSES,
    POST_TRAINING,
    available_defenses,
    build_defense,
    build_post_training,
    get_defense_class,
    register,
    validate_defense,
    defense_min_clients,
    validate_post_training,
)
from . import fedavg, flain  # noqa: F401  (registers)
from . import fedward, flame, private_flame  # noqa: F401  (registers)
from . import crfl, deepsight, fedcc, fltrust  # noqa: F401  (registers)
from . import afa, auror, bulyan, foolsgold, geomed, krum, median, norm_clipping, rlr, trimmed_mean  # noqa: F401,E501  (registers)

__all__ = [
    "DEFENSES",
    "POST_TRAINING",
    "Aggregate",
    "Defense",
    "DefenseContext",
    "ParameterError",
    "RoundInput",
    "available_defenses",
    "build_defense",
    "build_post_training",
    "check_round_input",
    "get_defense_class",
    "refuse_non_finite",
    "register",
    "require",
    "validate_defense",
    "defense_min_clients",
    "validate_post_training",
]
