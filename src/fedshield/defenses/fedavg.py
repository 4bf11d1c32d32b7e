"""FedAvg (McMahan et al., AISTATS 2017): G_t = G_{t-1} + Σ_i w_i Δ_i with w_i ∝ n_i or w_i = 1/n."""

from __future__ import annotations

import torch

from ..core.numeric import is_finite_number, weighted_mean
from .base import Aggregate, Defense, RoundInput, require
from .registry import register


@register
class FedAvg(Defense):
    """Plain federated averaging; no defense. ``weighting="samples"`` (default) or ``"uniform"``."""

    name = "fedavg"
    summary = "Federated averaging of all updates (no defense), weighted by sample count or uniformly"
    paper = "McMahan et al., Communication-Efficient Learning of Deep Networks from Decentralized Data, AISTATS 2017"

    def __init__(self, weighting: str = "samples", server_lr: float = 1.0):
        require(weighting in ("samples", "uniform"), "weighting", weighting, "allowed: 'samples', 'uniform'")
        require(is_finite_number(server_lr) and server_lr > 0, "server_lr", server_lr, "allowed: a finite number > 0")
        self.weighting = weighting
        self.server_lr = float(server_lr)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        weights = inp.num_samples if self.weighting == "samples" else None
        delta = weighted_mean(inp.updates, weights)
        accepted = torch.ones(inp.n, dtype=torch.bool)
        return Aggregate(inp.global_params + self.server_lr * delta, accepted, {"accepted": float(inp.n)})
