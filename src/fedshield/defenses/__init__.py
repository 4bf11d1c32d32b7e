"""Defenses: one module per defense, each registered by name (see ``registry``)."""

from .base import Aggregate, Defense, DefenseContext, ParameterError, RoundInput, check_round_input, require
from .registry import available_defenses, build_defense, get_defense_class, register
from . import fedavg  # noqa: F401  (registers)
from . import fedward, flame, private_flame  # noqa: F401  (registers)
from . import crfl, deepsight, fedcc, fltrust  # noqa: F401  (registers)
from . import afa, auror, bulyan, foolsgold, geomed, krum, median, norm_clipping, rlr, trimmed_mean  # noqa: F401,E501  (registers)

__all__ = [
    "Aggregate",
    "Defense",
    "DefenseContext",
    "ParameterError",
    "RoundInput",
    "available_defenses",
    "build_defense",
    "check_round_input",
    "get_defense_class",
    "register",
    "require",
]
