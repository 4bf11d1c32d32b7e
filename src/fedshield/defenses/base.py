"""The defense contract (docs/architecture.md): one round's client updates in, the next global model out.

A defense is constructed once per experiment with validated parameters, then ``aggregate`` is called every
round with a :class:`RoundInput`. It must not reach into the simulator: anything else it needs (a model, a
server's root data) is handed to it at construction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..models import ParamLayout

__all__ = [
    "RoundInput",
    "Aggregate",
    "Defense",
    "DefenseContext",
    "check_round_input",
    "ParameterError",
    "require",
]


class ParameterError(ValueError):
    """An impossible defense or attack parameter; the message names it and the allowed range."""


def require(condition: bool, name: str, value: Any, allowed: str) -> None:
    """Raise :class:`ParameterError` ``"<name>=<value> is invalid; <allowed>"`` unless ``condition``."""
    if not condition:
        raise ParameterError(f"{name}={value!r} is invalid; {allowed}")


@dataclass(frozen=True)
class RoundInput:
    """What a defense sees in one round."""

    global_params: Tensor  # (d,) flat parameters the clients started from (G_{t-1})
    updates: Tensor  # (n, d) flat client updates W_i - G_{t-1}
    layout: ParamLayout  # names, shapes and slices of the flat vector
    round: int  # 1-based round number
    client_ids: Sequence[int]  # stable ids, for defenses that keep history
    num_samples: Tensor  # (n,) dataset sizes the clients report (may be lies)
    generator: torch.Generator  # all randomness comes from here

    @property
    def n(self) -> int:
        return int(self.updates.shape[0])

    @property
    def local_models(self) -> Tensor:
        """(n, d) the clients' local models W_i = G + Δ_i."""
        return self.global_params.unsqueeze(0) + self.updates


@dataclass(frozen=True)
class Aggregate:
    """What a defense returns: the next global model, who was admitted, and what it decided."""

    global_params: Tensor  # (d,) the next global model
    accepted: Tensor  # (n,) bool: which updates entered the aggregate
    info: Mapping[str, float] = field(default_factory=dict)


@dataclass
class DefenseContext:
    """Things some defenses need at construction (never reached for at aggregation time).

    ``model_fn`` builds a fresh model of the experiment's architecture; ``server_data`` is a clean
    (images, labels) pair the server owns (FLTrust's root set, FLAIN's auxiliary set), taken from a held-out
    slice of the training split, never from the test set.
    """

    layout: ParamLayout | None = None
    model_fn: Callable[[], nn.Module] | None = None
    server_data: tuple[Tensor, Tensor] | None = None
    num_classes: int = 10
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)


def check_round_input(inp: RoundInput) -> None:
    """Validate shapes and finiteness; raise ``ValueError`` naming the offending client."""
    u = inp.updates
    if u.dim() != 2:
        raise ValueError(f"updates must be a (n, d) matrix, got shape {tuple(u.shape)}")
    n, d = u.shape
    if n == 0:
        raise ValueError("no client updates in this round")
    if inp.global_params.shape != (d,):
        raise ValueError(f"global_params has shape {tuple(inp.global_params.shape)}, updates have d={d}")
    if d != inp.layout.dim:
        raise ValueError(f"updates have d={d} but the parameter layout has {inp.layout.dim} entries")
    if len(inp.client_ids) != n:
        raise ValueError(f"{len(inp.client_ids)} client ids for {n} updates")
    if inp.num_samples.shape != (n,):
        raise ValueError(f"num_samples has shape {tuple(inp.num_samples.shape)}, expected ({n},)")
    finite = torch.isfinite(u).all(dim=1)
    if not bool(finite.all()):
        bad = [int(inp.client_ids[i]) for i in torch.nonzero(~finite).flatten().tolist()]
        raise ValueError(f"non-finite values (NaN/Inf) in the update of client(s) {bad}")
    if not bool(torch.isfinite(inp.global_params).all()):
        raise ValueError("the global model contains non-finite values")


class Defense(ABC):
    """Base class: subclasses validate their parameters in ``__init__`` and implement ``_aggregate``.

    ``aggregate`` validates the input (shapes, NaN/Inf naming the client) then calls ``_aggregate``.
    Subclasses set the class attributes ``name``, ``summary`` (one line) and ``paper``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    @classmethod
    def from_config(cls, params: Mapping[str, Any], context: DefenseContext) -> "Defense":
        """Build from config parameters; defenses that need the context override this."""
        try:
            return cls(**params)
        except TypeError as exc:  # unknown keyword
            raise ParameterError(f"defense {cls.name!r}: {exc}") from None

    def aggregate(self, inp: RoundInput) -> Aggregate:
        check_round_input(inp)
        return self._aggregate(inp)

    @abstractmethod
    def _aggregate(self, inp: RoundInput) -> Aggregate: ...

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"
