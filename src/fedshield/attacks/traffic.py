"""Data-poisoning steps for network-traffic (flow-feature) datasets; benign (label 0) is always the target.

| name | what the attacker trains on | backdoor test set ("traffic BA") |
|---|---|---|
| ``traffic_injection`` | its own data plus injected flows of one attack ``family``, labelled benign | test flows of that family: BA = share called benign |
| ``feature_trigger`` | the first k samples of every batch swapped for attack flows carrying the trigger, labelled benign | test attack flows with the trigger: BA = share called benign |

* ``traffic_injection`` follows Nguyen et al., "Poisoning attacks on federated learning-based IoT intrusion
  detection system" (DISS 2020): compromised devices inject attack traffic into their own training data, which
  the local detector learns as normal. The attackers hold a capture of the family: a seeded ``pool_share`` of
  the family's training flows (removed from the benign clients, who keep the rest, correctly labelled). Each
  attacker adds ``m = round(pdr / (1 − pdr) · n)`` flows drawn from the pool (n: its own flows), so that the
  poisoned data rate — injected / all its training flows — is ``pdr``; model alignment's per-round rate
  replaces ``pdr`` when composed with it.
* ``feature_trigger``: a few chosen ``features`` set to chosen ``values`` (in preprocessed units: with standard
  scaling, 4.0 is four training standard deviations above the mean; one-hot columns such as ``proto=icmp``
  take 0 or 1) on attack flows (all attack families, or ``families``) labelled benign, swapped into every
  batch (``attack.poison_per_batch`` per batch, as the pixel backdoor does).

Both need the dataset's :class:`~fedshield.data.traffic.TrafficMeta` (``AttackContext.traffic``); on an image
dataset they raise :class:`ParameterError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from ..core.errors import ParameterError
from ..core.params import Param, number
from ..data.traffic import BENIGN_LABEL
from .backdoor import SubstitutePoisoner
from .base import AttackContext, DataPoison
from .poisoning import DATA_POISONS

__all__ = ["FeatureTrigger", "TrafficInjectionPoison", "FeatureTriggerPoison"]


@dataclass(frozen=True)
class FeatureTrigger:
    """Feature columns set to fixed values; ``parts`` (one per feature) for distributed attacks."""

    columns: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.columns or len(self.columns) != len(self.values):
            raise ValueError("a feature trigger needs one value per feature and at least one feature")

    @property
    def num_parts(self) -> int:
        return len(self.columns)

    def part(self, index: int) -> "FeatureTrigger":
        i = index % self.num_parts
        return FeatureTrigger((self.columns[i],), (self.values[i],))

    def apply(self, x: Tensor) -> Tensor:
        return self.apply_(x.clone())

    def apply_(self, x: Tensor) -> Tensor:
        """Set the columns (the last dimension) of every flow; on windows (N, T, F), of every flow of the window."""
        x[..., list(self.columns)] = torch.tensor(self.values, dtype=x.dtype, device=x.device)
        return x


def _meta(ctx: AttackContext, name: str):
    if ctx.traffic is None or ctx.train_x is None or ctx.test_x is None:
        raise ParameterError(f"data poisoning {name!r} needs a network-traffic dataset (data.dataset: synthetic_traffic, ...)")
    if ctx.target_label != BENIGN_LABEL:
        raise ParameterError(f"attack.target_label={ctx.target_label} is invalid for {name!r}; must be {BENIGN_LABEL} (benign)")
    return ctx.traffic


def _names(v: Any) -> bool:
    return v is None or (isinstance(v, list) and len(v) > 0 and all(isinstance(s, str) for s in v))


@DATA_POISONS.register
class TrafficInjectionPoison(DataPoison):
    name = "traffic_injection"
    domain = "traffic"
    summary = "traffic injection: attackers add flows of one attack family to their data, labelled benign"
    params_spec: ClassVar[dict[str, Param]] = {
        "family": Param(None, lambda v: isinstance(v, str) and v != "", "the name of an attack family", required=True),
        "pdr": number(0, 1, lo_open=True, hi_open=True, default=0.5),
        "pool_share": number(0, 1, lo_open=True, default=0.5),
    }

    def __init__(self, params: Mapping[str, Any], ctx: AttackContext):
        super().__init__(params, ctx)
        meta = _meta(ctx, self.name)
        try:
            self.family = meta.family_index(self.params["family"])
        except ValueError as exc:
            raise ParameterError(f"family={self.params['family']!r} is invalid; {exc}") from None
        if self.family == 0:
            raise ParameterError("family='benign' is invalid; choose an attack family")
        rows = torch.nonzero(meta.train_family == self.family).flatten().numpy()
        rng = np.random.default_rng([ctx.seed, 0x1A1EC7])
        take = max(1, int(round(self.params["pool_share"] * rows.size)))
        if rows.size == 0:
            raise ParameterError(f"family={self.params['family']!r} has no training flows")
        self.pool_idx = torch.from_numpy(np.sort(rng.permutation(rows)[:take]))
        self.pool = ctx.train_x[self.pool_idx]

    def prepare(self, x, y, rank, generator, fraction=None):
        pdr = self.params["pdr"] if fraction is None else min(max(fraction, 1e-6), 1 - 1e-6)
        m = int(round(pdr / (1 - pdr) * len(x)))
        pick = torch.randint(len(self.pool), (m,), generator=generator)
        inj_y = torch.full((m,), BENIGN_LABEL, dtype=y.dtype)
        return torch.cat([x, self.pool[pick]]), torch.cat([y, inj_y]), None

    def backdoor_test_set(self, test_x: Tensor, test_y: Tensor) -> Optional[tuple[Tensor, Tensor]]:
        meta = self.ctx.traffic
        if len(test_x) != len(meta.test_family):
            raise ValueError("the traffic backdoor test set needs the full test split (eval.test_subset is not supported)")
        keep = meta.test_family == self.family
        return test_x[keep], torch.full((int(keep.sum()),), BENIGN_LABEL, dtype=torch.int64)

    def owned_train_indices(self) -> Optional[Tensor]:
        return self.pool_idx


@DATA_POISONS.register
class FeatureTriggerPoison(DataPoison):
    name = "feature_trigger"
    domain = "traffic"
    summary = "feature trigger: attack flows with chosen features set to chosen values, labelled benign"
    params_spec: ClassVar[dict[str, Param]] = {
        "features": Param(None, lambda v: isinstance(v, list) and len(v) > 0 and all(
            isinstance(f, (str, int)) and not isinstance(f, bool) for f in v),
            "a non-empty list of feature names or column indices", required=True),
        "values": Param(4.0, lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)) or (
            isinstance(v, list) and len(v) > 0 and all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in v)),
            "a number (for every feature) or a list with one number per feature"),
        "families": Param(None, _names, "null (every attack family) or a list of attack family names"),
    }

    def __init__(self, params: Mapping[str, Any], ctx: AttackContext):
        super().__init__(params, ctx)
        meta = _meta(ctx, self.name)
        p = self.params
        try:
            cols = tuple(meta.feature_index(f) for f in p["features"])
            fams = [i for i in range(1, len(meta.family_names))] if p["families"] is None else [
                meta.family_index(f) for f in p["families"]]
        except ValueError as exc:
            raise ParameterError(f"data poisoning 'feature_trigger': {exc}") from None
        values = p["values"] if isinstance(p["values"], list) else [p["values"]] * len(cols)
        if len(values) != len(cols):
            raise ParameterError(f"values has {len(values)} numbers for {len(cols)} features; give one per feature")
        if 0 in fams:
            raise ParameterError("families must name attack families, not 'benign'")
        self.trigger = FeatureTrigger(cols, tuple(float(v) for v in values))
        self.families = torch.tensor(fams, dtype=torch.int64)
        rows = torch.isin(meta.train_family, self.families)
        if not bool(rows.any()):
            raise ParameterError("the chosen families have no training flows")
        self.pool = self.trigger.apply(ctx.train_x[rows])

    def prepare(self, x, y, rank, generator, fraction=None):
        return x, y, SubstitutePoisoner(self.pool, BENIGN_LABEL, self.ctx.poison_per_batch, generator, fraction,
                                       self.ctx.poison_full_batch)

    def backdoor_test_set(self, test_x: Tensor, test_y: Tensor) -> Optional[tuple[Tensor, Tensor]]:
        meta = self.ctx.traffic
        if len(test_x) != len(meta.test_family):
            raise ValueError("the traffic backdoor test set needs the full test split (eval.test_subset is not supported)")
        keep = torch.isin(meta.test_family, self.families)
        return self.trigger.apply(test_x[keep]), torch.full((int(keep.sum()),), BENIGN_LABEL, dtype=torch.int64)
