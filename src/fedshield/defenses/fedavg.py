"""FedAvg (McMahan et al., AISTATS 2017): G_t = G_{t-1} + Σ_i w_i Δ_i with w_i ∝ n_i or w_i = 1/n."""

from __future__ import annotations

import torch

from .base import Aggregate, Defense, RoundInput, require
from .registry import register


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_i w_i Δ_i / Σ_i w_i over the rows of ``updates`` (plain mean when ``weights`` is None).

    Written as a broadcast product and a sum over rows rather than a matrix-vector product: the result then
    does not depend on the number of threads (a threaded GEMV reduces in a different order).
    """
    if weights is None:
        return updates.mean(dim=0)
    w = weights.to(updates.dtype)
    total = w.sum()
    if not bool(total > 0):
        raise ValueError(f"aggregation weights must have a positive sum, got {w.tolist()}")
    return (updates * (w / total).unsqueeze(1)).sum(dim=0)


@register
class FedAvg(Defense):
    """Plain federated averaging; no defense. ``weighting="samples"`` (default) or ``"uniform"``."""

    name = "fedavg"
    summary = "Federated averaging of all updates (no defense), weighted by sample count or uniformly"
    paper = "McMahan et al., Communication-Efficient Learning of Deep Networks from Decentralized Data, AISTATS 2017"

    def __init__(self, weighting: str = "samples", server_lr: float = 1.0):
        require(weighting in ("samples", "uniform"), "weighting", weighting, "allowed: 'samples', 'uniform'")
        require(server_lr > 0, "server_lr", server_lr, "must be > 0")
        self.weighting = weighting
        self.server_lr = float(server_lr)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        weights = inp.num_samples if self.weighting == "samples" else None
        delta = weighted_mean(inp.updates, weights)
        accepted = torch.ones(inp.n, dtype=torch.bool)
        return Aggregate(inp.global_params + self.server_lr * delta, accepted, {"accepted": float(inp.n)})
