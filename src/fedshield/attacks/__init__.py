"""Attacks: data poisoning (triggers, blended, semantic, edge-case, label flipping) composed with model
poisoning (scaling, train-and-scale, boosting, constrain-and-scale, PGD, Neurotoxin, noise, alignment, Fang's
Krum attack), registered by name (``available_attacks()``). Attacks know nothing of defenses."""

from .backdoor import BatchPoisoner, SubstitutePoisoner, flip_labels
from .base import (
    Attack,
    AttackContext,
    ClientPlan,
    DataPoison,
    ParameterError,
    RoundState,
    TrainHooks,
    available_attacks,
    build_attack,
    get_attack_class,
    register_attack,
    validate_attack_params,
)
from .triggers import BLEND_PATTERNS, TRIGGER_NAMES, BlendTrigger, Trigger, blend_pattern, named_trigger
from . import library  # noqa: F401  (registers)
from .library import attack_data_step, check_attack_domain

__all__ = [
    "attack_data_step",
    "check_attack_domain",
    "Attack",
    "AttackContext",
    "BLEND_PATTERNS",
    "BatchPoisoner",
    "BlendTrigger",
    "ClientPlan",
    "DataPoison",
    "ParameterError",
    "RoundState",
    "SubstitutePoisoner",
    "TRIGGER_NAMES",
    "TrainHooks",
    "Trigger",
    "available_attacks",
    "blend_pattern",
    "build_attack",
    "flip_labels",
    "get_attack_class",
    "named_trigger",
    "register_attack",
    "validate_attack_params",
]
