"""The attack contract and registry.

An attack is built once per experiment from ``attack.name`` and ``attack.params`` (validated, errors name the
parameter) and composes two steps:

* a **data-poisoning step** (:class:`DataPoison`): what an attacker trains on — a per-batch poisoner
  (trigger stamping, blending, swapping in real backdoor images) and/or relabelled data (label flipping);
  it also says which test set measures its backdoor (:meth:`DataPoison.backdoor_test_set`);
* a **model-poisoning step**: training-time hooks (:class:`TrainHooks`: extra loss terms, projections,
  gradient masks) and an update-level transformation after training (scaling, noise), or, for an omniscient
  attack (Fang et al.), crafting the attackers' updates from the benign updates of the round.

The simulator asks the attack, per attacking client and round, for a :class:`ClientPlan`; benign clients
never touch this module (their training loop is unchanged).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..defenses.base import ParameterError
from ..models import ParamLayout

__all__ = [
    "Attack",
    "AttackContext",
    "ClientPlan",
    "DataPoison",
    "Param",
    "ParameterError",
    "RoundState",
    "TrainHooks",
    "available_attacks",
    "build_attack",
    "get_attack_class",
    "register_attack",
    "validate_attack_params",
]


# ------------------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class Param:
    """One attack parameter: default, a check of the value, and the allowed range in words.

    ``required`` parameters have no default. ``convert`` normalises a valid value (e.g. int → float).
    """

    default: Any = None
    check: Callable[[Any], bool] = lambda v: True
    allowed: str = ""
    required: bool = False
    convert: Callable[[Any], Any] = lambda v: v


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
           default: Any = None, required: bool = False, nullable: bool = False) -> Param:
    """A float parameter in a (half-)open or closed interval."""

    def check(v: Any) -> bool:
        if v is None:
            return nullable
        if not _is_num(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        if hi is not None and (v >= hi if hi_open else v > hi):
            return False
        return True

    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    rng = f"a number in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    if nullable:
        rng += " or null"
    return Param(default, check, rng, required, lambda v: None if v is None else float(v))


def integer(lo: int = 0, default: Any = None, nullable: bool = False) -> Param:
    return Param(
        default,
        lambda v: (v is None and nullable) or (isinstance(v, int) and not isinstance(v, bool) and v >= lo),
        f"an integer >= {lo}" + (" or null" if nullable else ""),
    )


def choice(*values: Any, default: Any = None) -> Param:
    return Param(default if default is not None else values[0], lambda v: v in values, f"one of {list(values)}")


def boolean(default: bool) -> Param:
    return Param(default, lambda v: isinstance(v, bool), "true or false")


def _validate(owner: str, spec: Mapping[str, Param], params: Mapping[str, Any] | None) -> dict[str, Any]:
    params = dict(params or {})
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ParameterError(f"{owner}: unknown parameter {unknown[0]!r}; allowed: {sorted(spec)}")
    out: dict[str, Any] = {}
    for key, p in spec.items():
        if key not in params:
            if p.required:
                raise ParameterError(f"{owner}: parameter {key!r} is required ({p.allowed})")
            out[key] = p.default
            continue
        v = params[key]
        if not p.check(v):
            raise ParameterError(f"{owner}: {key}={v!r} is invalid; {p.allowed}")
        out[key] = p.convert(v)
    return out


# -------------------------------------------------------------------------------------------- context


@dataclass
class AttackContext:
    """What an attack may know at construction (the attacker's view of the experiment).

    ``train_x/train_y`` are the training split clients draw from (sub-population backdoors pick their real
    images there); ``test_x/test_y`` the full test split (their backdoor test sets come from it).
    """

    target_label: int = 2
    poison_per_batch: int = 20
    trigger: Any = None  # the global pixel trigger of attack.trigger
    num_classes: int = 10
    image_shape: tuple[int, int, int] = (1, 28, 28)
    train_x: Optional[Tensor] = None
    train_y: Optional[Tensor] = None
    test_x: Optional[Tensor] = None
    test_y: Optional[Tensor] = None
    layout: Optional[ParamLayout] = None
    seed: int = 0
    num_attackers: int = 0
    traffic: Any = None  # data.traffic.TrafficMeta of a network-traffic dataset (families, features); None for images


@dataclass(frozen=True)
class RoundState:
    """One round as an attacker sees it."""

    round: int
    global_params: Tensor  # G_{t-1}, the model this round starts from
    previous_global: Optional[Tensor]  # the model the previous round started from (None when unknown)
    selected: Sequence[int]  # all clients of the round
    attackers: Sequence[int]  # the attacking clients among them
    layout: ParamLayout
    seed: int
    sizes: Mapping[int, int] = field(default_factory=dict)  # training-set size of each selected client
    # stream(purpose, cid): the per-(round, client) random stream for ``purpose`` (sim.seeding.torch_stream)
    stream: Optional[Callable[[str, int], torch.Generator]] = None

    def rng(self, purpose: str, cid: int) -> torch.Generator:
        if self.stream is None:
            key = f"{self.seed}/{purpose}/{self.round}/{cid}".encode()
            return torch.Generator().manual_seed(zlib.crc32(key))
        return self.stream(purpose, cid)

    @property
    def num_selected(self) -> int:
        return len(self.selected)

    @property
    def num_attackers(self) -> int:
        return len(self.attackers)


class TrainHooks:
    """Callbacks inside :meth:`fedshield.sim.train.LocalTrainer.train` (attacking clients only).

    ``params`` are the model's trainable tensors (weights and biases) in layout order, ``global_params``
    the matching tensors of the global model (read-only). Nothing here may synchronise with Python per step.
    """

    def begin(self, params: list[Tensor], global_params: list[Tensor]) -> None:
        self.global_params = global_params

    def loss(self, class_loss: Tensor, params: list[Tensor]) -> Tensor:
        return class_loss

    def after_backward(self, params: list[Tensor]) -> None:
        pass

    def after_step(self, params: list[Tensor], step: int) -> None:
        """``step``: 1-based count of optimiser steps taken so far."""

    def end(self, params: list[Tensor]) -> None:
        pass


@dataclass
class ClientPlan:
    """How one attacking client trains this round."""

    x: Tensor
    y: Tensor
    poisoner: Optional[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]] = None
    hooks: Optional[TrainHooks] = None


# -------------------------------------------------------------------------------------- data poisoning


class DataPoison:
    """A data-poisoning step; subclasses set ``name``, ``summary``, ``params_spec``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params_spec: ClassVar[dict[str, Param]] = {}

    def __init__(self, params: Mapping[str, Any], ctx: AttackContext):
        self.params = _validate(f"data poisoning {self.name!r}", self.params_spec, params)
        self.ctx = ctx

    @classmethod
    def validate(cls, params: Mapping[str, Any] | None) -> dict[str, Any]:
        return _validate(f"data poisoning {cls.name!r}", cls.params_spec, params)

    def prepare(
        self, x: Tensor, y: Tensor, rank: int, generator: torch.Generator, fraction: Optional[float] = None
    ) -> tuple[Tensor, Tensor, Optional[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]]]:
        """(x, y, poisoner) an attacker of ``rank`` trains on; ``fraction`` overrides poison_per_batch."""
        raise NotImplementedError

    def backdoor_test_set(self, test_x: Tensor, test_y: Tensor) -> Optional[tuple[Tensor, Tensor]]:
        """Default: the global trigger on the test images whose label is not the target."""
        trig = self.ctx.trigger
        if trig is None:
            return None
        keep = test_y != self.ctx.target_label
        return trig.apply(test_x[keep]), torch.full((int(keep.sum()),), self.ctx.target_label, dtype=torch.int64)

    def owned_train_indices(self) -> Optional[Tensor]:
        """Training indices only attackers hold (removed from benign clients); None: nothing special."""
        return None


# ------------------------------------------------------------------------------------------ the attack


class Attack:
    """Base class of registered attacks. Subclasses set ``name``, ``summary``, ``paper`` and ``params_spec``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    params_spec: ClassVar[dict[str, Param]] = {}
    omniscient: ClassVar[bool] = False  # crafts its updates from the round's benign updates (no training)
    needs_previous_global: ClassVar[bool] = False

    def __init__(self, params: Mapping[str, Any], ctx: AttackContext):
        self.params = self.validate(params)
        self.ctx = ctx

    @classmethod
    def validate(cls, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check ``params`` without an experiment (config time); raise :class:`ParameterError` naming the key."""
        return _validate(f"attack {cls.name!r}", cls.params_spec, params)

    # --- per client and round
    def plan(self, cid: int, rank: int, x: Tensor, y: Tensor, state: RoundState) -> ClientPlan:
        return ClientPlan(x, y)

    def after_training(self, update: Tensor, cid: int, rank: int, state: RoundState) -> Tensor:
        return update

    def craft(self, benign_updates: Tensor, state: RoundState) -> list[Tensor]:
        """Omniscient attacks: one update per attacker in ``state.attackers``, from the (m, d) benign updates."""
        raise NotImplementedError

    # --- evaluation and data ownership
    def backdoor_test_set(self, test_x: Tensor, test_y: Tensor) -> Optional[tuple[Tensor, Tensor]]:
        return None

    def owned_train_indices(self) -> Optional[Tensor]:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


_REGISTRY: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"attack name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available_attacks() -> dict[str, type[Attack]]:
    """Name → class, sorted by name."""
    return dict(sorted(_REGISTRY.items()))


def get_attack_class(name: str) -> type[Attack]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown attack {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def validate_attack_params(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    return get_attack_class(name).validate(params)


def build_attack(name: str, params: Mapping[str, Any] | None, ctx: AttackContext) -> Attack:
    return get_attack_class(name)(dict(params or {}), ctx)

