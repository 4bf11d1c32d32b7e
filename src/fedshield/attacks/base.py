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

from ..core.errors import ParameterError
from ..core.params import Param, validate_params
from ..core.registry import Registry
from ..models import ParamLayout

__all__ = [
    "ATTACKS",
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


# -------------------------------------------------------------------------------------------- context


@dataclass
class AttackContext:
    """What an attack may know at construction (the attacker's view of the experiment).

    ``train_x/train_y`` are the training split clients draw from (sub-population backdoors pick their real
    images there); ``test_x/test_y`` the full test split (their backdoor test sets come from it).
    """

    target_label: int = 2
    poison_per_batch: int = 20
    # attack.poison_count "proportional": the batch length poison_per_batch refers to (a shorter last batch gets
    # the same share); None ("fixed"): poison_per_batch samples of every batch
    poison_full_batch: Optional[int] = None
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


class _Declared:
    """A named step with declared parameters (``params_spec``), validated at construction and at config time."""

    kind: ClassVar[str] = ""  # the word used in error messages
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    params_spec: ClassVar[dict[str, Param]] = {}

    def __init__(self, params: Mapping[str, Any], ctx: AttackContext):
        self.params = self.validate(params)
        self.ctx = ctx

    @classmethod
    def validate(cls, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check ``params`` without an experiment (config time); raise :class:`ParameterError` naming the key."""
        return validate_params(f"{cls.kind} {cls.name!r}", cls.params_spec, params)


class DataPoison(_Declared):
    """A data-poisoning step; subclasses set ``name``, ``summary``, ``params_spec``."""

    kind = "data poisoning"
    # the inputs the step understands: "image" (pixel triggers, sub-populations of images), "traffic" (flow
    # features), "any" (label flipping); build_data_poison refuses a step on the other kind of dataset
    domain: ClassVar[str] = "any"

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


class Attack(_Declared):
    """Base class of registered attacks. Subclasses set ``name``, ``summary``, ``paper`` and ``params_spec``."""

    kind = "attack"
    paper: ClassVar[str] = ""
    omniscient: ClassVar[bool] = False  # crafts its updates from the round's benign updates (no training)
    needs_previous_global: ClassVar[bool] = False

    @classmethod
    def min_clients(cls, num_attackers: int) -> int:
        """The fewest clients a round with ``num_attackers`` attackers may have (the simulator refuses a smaller
        ``clients_per_round`` with fixed attackers before training)."""
        return 1

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


ATTACKS: Registry[type[Attack]] = Registry("attack")


def register_attack(cls: type[Attack]) -> type[Attack]:
    return ATTACKS.register(cls)


def available_attacks() -> dict[str, type[Attack]]:
    """Name → class, sorted by name."""
    return ATTACKS.items()


def get_attack_class(name: str) -> type[Attack]:
    return ATTACKS.get(name)


def validate_attack_params(name: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    return get_attack_class(name).validate(params)


def build_attack(name: str, params: Mapping[str, Any] | None, ctx: AttackContext) -> Attack:
    return get_attack_class(name)(dict(params or {}), ctx)
