"""FedAvg (McMahan et al., AISTATS 2017): G_t = G_{t-1} + Σ_i w_i Δ_i with w_i ∝ n_i or w_i = 1/n."""

from __future__ import annotations

import math

import torch

from .base import Aggregate, Defense, RoundInput, require
from .registry import register


def mean_rows(x: torch.Tensor) -> torch.Tensor:
    """Column means of ``x`` (n, d) that do not overflow: a float32 sum of huge finite values can reach Inf
    although their mean is finite; then the mean is recomputed in float64 (the result is unchanged otherwise)."""
    m = x.mean(dim=0)
    if x.dtype == torch.float64 or bool(torch.isfinite(m).all()) or not bool(torch.isfinite(x).all()):
        return m
    return x.to(torch.float64).mean(dim=0).to(x.dtype)


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_i w_i Δ_i / Σ_i w_i over the rows of ``updates`` (plain mean when ``weights`` is None).

    Written as a broadcast product and a sum over rows rather than a matrix-vector product: the result then
    does not depend on the number of threads (a threaded GEMV reduces in a different order). Huge finite
    updates do not overflow to Inf (see :func:`mean_rows`).
    """
    if weights is None:
        return mean_rows(updates)
    w = weights.to(updates.dtype)
    total = w.sum()
    if not bool(torch.isfinite(w).all()) or not bool((w >= 0).all()) or not bool(total > 0):
        raise ValueError(f"aggregation weights must be finite, >= 0 and have a positive sum, got {w.tolist()}")
    out = (updates * (w / total).unsqueeze(1)).sum(dim=0)
    if updates.dtype != torch.float64 and not bool(torch.isfinite(out).all()) and bool(torch.isfinite(updates).all()):
        w64 = weights.to(torch.float64)
        out = (updates.to(torch.float64) * (w64 / w64.sum()).unsqueeze(1)).sum(dim=0).to(updates.dtype)
    return out


@register
class FedAvg(Defense):
    """Plain federated averaging; no defense. ``weighting="samples"`` (default) or ``"uniform"``."""

    name = "fedavg"
    summary = "Federated averaging of all updates (no defense), weighted by sample count or uniformly"
    paper = "McMahan et al., Communication-Efficient Learning of Deep Networks from Decentralized Data, AISTATS 2017"

    def __init__(self, weighting: str = "samples", server_lr: float = 1.0):
        require(weighting in ("samples", "uniform"), "weighting", weighting, "allowed: 'samples', 'uniform'")
        require(isinstance(server_lr, (int, float)) and not isinstance(server_lr, bool) and math.isfinite(server_lr)
                and server_lr > 0, "server_lr", server_lr, "must be a finite number > 0")
        self.weighting = weighting
        self.server_lr = float(server_lr)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        weights = inp.num_samples if self.weighting == "samples" else None
        delta = weighted_mean(inp.updates, weights)
        accepted = torch.ones(inp.n, dtype=torch.bool)
        return Aggregate(inp.global_params + self.server_lr * delta, accepted, {"accepted": float(inp.n)})
