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

from ..core.errors import ParameterError, RoundInputError
from ..core.numeric import assemble_global, finite_rows
from ..core.params import Param, require, spec_from_signature, validate_params
from ..models import ParamLayout

__all__ = [
    "RoundInput",
    "Aggregate",
    "Defense",
    "DefenseContext",
    "LocalTrain",
    "check_round_input",
    "refuse_non_finite",
    "ParameterError",
    "RoundInputError",
    "assemble",
    "require",
]


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


# local_train(global_params, x, y, settings, generator) -> the update after SGD on (x, y) from global_params;
# settings: lr, momentum, weight_decay, epochs, batch_size. The simulator's local training, handed to defenses
# that train on the server's data (FLTrust) so that they need not import the simulator.
LocalTrain = Callable[[Tensor, Tensor, Tensor, Mapping[str, float], torch.Generator], Tensor]


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
    local_train: LocalTrain | None = None


def check_round_input(inp: RoundInput) -> None:
    """Validate shapes and finiteness; raise :class:`RoundInputError` (a ``ValueError``) naming the offending client."""
    u = inp.updates
    if u.dim() != 2:
        raise RoundInputError(f"updates must be a (n, d) matrix, got shape {tuple(u.shape)}")
    n, d = u.shape
    if n == 0:
        raise RoundInputError("no client updates in this round")
    if not u.is_floating_point():
        raise RoundInputError(f"updates must be floating point, got dtype {u.dtype}")
    if inp.global_params.dtype != u.dtype or inp.global_params.device != u.device:
        raise RoundInputError(
            f"updates ({u.dtype} on {u.device}) and global_params ({inp.global_params.dtype} on "
            f"{inp.global_params.device}) must share one dtype and device; convert one of them"
        )
    if inp.num_samples.is_complex() or inp.num_samples.dtype == torch.bool:
        raise RoundInputError(f"num_samples must be real numbers, got dtype {inp.num_samples.dtype}")
    if inp.global_params.shape != (d,):
        raise RoundInputError(f"global_params has shape {tuple(inp.global_params.shape)}, updates have d={d}")
    if d != inp.layout.dim:
        raise RoundInputError(f"updates have d={d} but the parameter layout has {inp.layout.dim} entries")
    if all(e.kind == "buffer" for e in inp.layout.entries):
        raise RoundInputError("the parameter layout has no trainable coordinates (only buffers); nothing to defend")
    if len(inp.client_ids) != n:
        raise RoundInputError(f"{len(inp.client_ids)} client ids for {n} updates")
    if inp.num_samples.shape != (n,):
        raise RoundInputError(f"num_samples has shape {tuple(inp.num_samples.shape)}, expected ({n},)")
    ids = [int(c) for c in inp.client_ids]
    if len(set(ids)) != n:
        dup = sorted({c for c in ids if ids.count(c) > 1})
        raise RoundInputError(f"client id(s) {dup} appear more than once in this round (each client sends one update)")
    bad_n = ~(torch.isfinite(inp.num_samples) & (inp.num_samples >= 0))
    if bool(bad_n.any()):
        bad = {ids[i]: float(inp.num_samples[i]) for i in torch.nonzero(bad_n).flatten().tolist()}
        raise RoundInputError(f"num_samples must be finite and >= 0; client(s) {list(bad)} report {list(bad.values())}")
    finite = finite_rows(u)
    if not bool(finite.all()):
        bad = [int(inp.client_ids[i]) for i in torch.nonzero(~finite).flatten().tolist()]
        raise RoundInputError(f"non-finite values (NaN/Inf) in the update of client(s) {bad}")
    if not bool(torch.isfinite(inp.global_params).all()):
        raise RoundInputError("the global model contains non-finite values")


def refuse_non_finite(inp: RoundInput, agg: Aggregate, defense: str = "defense") -> Aggregate:
    """The contract's output check. A next global model with NaN/Inf (e.g. huge finite updates whose aggregate
    overflows float32, or a server learning rate that blows it up) is never passed on: the round keeps the
    previous global model G_{t-1}, admits nobody, and says why in ``info["refused"] = 1.0`` and
    ``info["refused_reason"]`` (the loop writes both into metrics.csv; the Flower strategy into its round log).
    Shapes that break the contract are a bug in the defense and raise ``ValueError``."""
    n, d = inp.updates.shape
    if tuple(agg.global_params.shape) != (d,):
        raise ValueError(f"{defense} returned a global model of shape {tuple(agg.global_params.shape)}, expected ({d},)")
    if tuple(agg.accepted.shape) != (n,):
        raise ValueError(f"{defense} returned an accepted mask of shape {tuple(agg.accepted.shape)}, expected ({n},)")
    bad = int((~torch.isfinite(agg.global_params)).sum())
    if bad == 0:
        return agg
    reason = (f"{defense}: the aggregate has {bad} non-finite (NaN/Inf) of {d} coordinates in round {inp.round}; "
              "kept the previous global model")
    info = {**agg.info, "refused": 1.0, "refused_reason": reason}
    return Aggregate(inp.global_params.clone(), torch.zeros(n, dtype=torch.bool), info)  # type: ignore[arg-type]


def assemble(inp: RoundInput, train_delta: Tensor | None, admitted: Tensor, scale: float = 1.0) -> Tensor:
    """The next global model: G + scale · ``train_delta`` on trainable coordinates, buffers G + the plain mean of
    the ``admitted`` updates (:func:`fedshield.core.numeric.assemble_global` on this round's input)."""
    train = inp.layout.trainable_mask(device=inp.global_params.device)
    return assemble_global(inp.global_params, inp.updates, train, train_delta, admitted, scale)


class Defense(ABC):
    """Base class: subclasses validate their parameters in ``__init__`` and implement ``_aggregate``.

    ``aggregate`` validates the input (shapes, NaN/Inf naming the client, duplicate client ids, sample counts
    that are negative or not finite) then calls ``_aggregate``, and refuses a non-finite result
    (:func:`refuse_non_finite`: the previous global model is kept and the reason recorded in ``info``).
    Subclasses set the class attributes ``name``, ``summary`` (one line) and ``paper``.

    Parameters are declared by the constructor's keyword arguments (:meth:`params_spec`: names, defaults);
    arguments that come from the experiment rather than the config (a model builder, the server's data) are
    listed in ``context_args`` and filled in by :meth:`from_config`. :meth:`validate` checks a config's
    parameters without an experiment, so a run or a sweep can refuse bad settings before anything trains.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    context_args: ClassVar[tuple[str, ...]] = ()
    # True for defenses that read the model's class outputs (DeepSight's DDifs): refused with a model that is
    # no classifier (the traffic autoencoder)
    needs_classifier: ClassVar[bool] = False

    @classmethod
    def params_spec(cls) -> dict[str, Param]:
        """The config parameters: the constructor's keyword arguments other than ``context_args``."""
        return spec_from_signature(cls.__init__, exclude=cls.context_args)

    @classmethod
    def validate(cls, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check ``params`` at config time: unknown or missing keys (from the spec), then the values (the
        constructor's checks, :meth:`check_values`). Raises :class:`ParameterError` naming the parameter."""
        validate_params(f"defense {cls.name!r}", cls.params_spec(), params)
        given = dict(params or {})
        try:
            cls.check_values(given)
        except ParameterError as exc:
            raise ParameterError(f"defense {cls.name!r}: {exc}") from None
        return given

    @classmethod
    def check_values(cls, params: dict[str, Any]) -> None:
        """Run the constructor's value checks on ``params`` completed with the defaults: :meth:`check_params`."""
        cls.check_params(**{**{k: p.default for k, p in cls.params_spec().items()}, **params})

    @classmethod
    def check_params(cls, **params: Any) -> None:
        """The value checks. Default: construct once (a defense without ``context_args`` does nothing expensive at
        construction); a defense with ``context_args`` overrides this with the checks its constructor calls."""
        cls(**params)

    @classmethod
    def from_config(cls, params: Mapping[str, Any], context: DefenseContext) -> "Defense":
        """Build from config parameters (keys checked against the spec first, so a ``TypeError`` here is a bug,
        never a user's typo); defenses with ``context_args`` override :meth:`context_values`."""
        validate_params(f"defense {cls.name!r}", cls.params_spec(), params)
        try:
            return cls(**dict(params), **cls.context_values(context))
        except ParameterError as exc:
            prefix = f"defense {cls.name!r}: "
            raise ParameterError(str(exc) if str(exc).startswith(prefix) else prefix + str(exc)) from None

    @classmethod
    def context_values(cls, context: DefenseContext) -> dict[str, Any]:
        """The ``context_args`` taken from the experiment's :class:`DefenseContext`."""
        return {}

    def min_clients(self) -> int:
        """The fewest updates one round may carry for these parameters (Krum's 2f + 3, RLR's threshold, ...);
        the simulator refuses a smaller ``clients_per_round`` before training, ``aggregate`` a smaller round."""
        return 1

    def aggregate(self, inp: RoundInput) -> Aggregate:
        check_round_input(inp)
        need = self.min_clients()
        if inp.n < need:
            raise RoundInputError(
                f"{self.name or type(self).__name__} with {self!r} needs at least {need} clients in a round, but "
                f"round {inp.round} has n={inp.n}"
            )
        return refuse_non_finite(inp, self._aggregate(inp), self.name or type(self).__name__)

    @abstractmethod
    def _aggregate(self, inp: RoundInput) -> Aggregate: ...

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"
