"""Geometric median by the smoothed Weiszfeld algorithm: RFA (Pillutla, Kakade, Harchaoui, "Robust Aggregation for
Federated Learning", IEEE Trans. Signal Processing 2022), the paper's smoothed Weiszfeld algorithm;
docs/defenses.md, GeoMed. The formulas below are the paper's as published, the algorithm numbering was not
checked [U].

    minimise g(v) = Σ_i α_i ‖v − Δ_i‖,   α_i ∝ n_i (or uniform), Σ α_i = 1
    iterate:  β_i = α_i / max(ν, ‖v − Δ_i‖);   v ← Σ_i β_i Δ_i / Σ_i β_i

starting from the weighted mean. The loop stops after ``max_iter`` iterations or when the relative change of the
objective |g(v_old) − g(v_new)| ≤ tol · g(v_new). ν > 0 keeps the weights finite when v lands on a data point.

Distances and the objective use only trainable coordinates (in float64); batch-norm buffers are the plain mean of
all clients (docs/defenses.md, Conventions.3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.numeric import is_finite_number, is_int, weighted_mean
from .base import Aggregate, Defense, RoundInput, assemble, require
from .registry import register

__all__ = ["GeoMed", "smoothed_weiszfeld"]


def smoothed_weiszfeld(
    x: Tensor, alphas: Tensor, max_iter: int = 100, tol: float = 1e-6, nu: float = 1e-6
) -> tuple[Tensor, int, float, Tensor]:
    """(v, iterations, objective g(v), last Weiszfeld weights β/Σβ) for the rows of ``x`` with weights ``alphas``."""
    a = alphas.to(torch.float64)
    a = a / a.sum()
    v = weighted_mean(x, a.to(x.dtype))

    def objective(v: Tensor) -> tuple[float, Tensor]:
        dist = torch.linalg.vector_norm((x - v.unsqueeze(0)).to(torch.float64), dim=1)
        return float((a * dist).sum()), dist

    obj, dist = objective(v)
    beta = a.clone()
    it = 0
    for it in range(1, max_iter + 1):
        beta = a / dist.clamp_min(nu)
        v = weighted_mean(x, (beta / beta.sum()).to(x.dtype))
        new_obj, dist = objective(v)
        converged = abs(obj - new_obj) <= tol * new_obj
        obj = new_obj
        if converged:
            break
    return v, it, obj, beta / beta.sum()


@register
class GeoMed(Defense):
    """Geometric median of the updates (RFA), by smoothed Weiszfeld (Pillutla et al. 2022).

    Parameters
    ----------
    weighting:
        ``"samples"`` (default, α_i ∝ reported n_i as in RFA) or ``"uniform"``.
    max_iter:
        Weiszfeld iterations at most (default 100).
    tol:
        stop when the objective's relative change is ≤ tol (default 1e-6).
    nu:
        smoothing ν > 0 (default 1e-6): distances are floored at ν.

    ``accepted`` is all True (with ``"samples"``: every client reporting n_i > 0): every such update keeps a
    positive Weiszfeld weight (outliers get small ones; see ``info["min_weight"]``). ``info``: iterations,
    objective, min/max final Weiszfeld weight.
    """

    name = "geomed"
    summary = "Geometric median of the updates by smoothed Weiszfeld (RFA), weighted by sample count or uniformly"
    paper = "Pillutla, Kakade, Harchaoui, Robust Aggregation for Federated Learning, IEEE TSP 2022 (arXiv 1912.13445)"

    def __init__(self, weighting: str = "samples", max_iter: int = 100, tol: float = 1e-6, nu: float = 1e-6):
        require(weighting in ("samples", "uniform"), "weighting", weighting, "allowed: 'samples', 'uniform'")
        require(is_int(max_iter) and max_iter >= 1, "max_iter", max_iter, "allowed: an integer >= 1")
        require(is_finite_number(tol) and tol >= 0,
                "tol", tol, "allowed: a finite number >= 0")
        require(is_finite_number(nu) and nu > 0,
                "nu", nu, "allowed: a finite number > 0")
        self.weighting = weighting
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.nu = float(nu)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        if self.weighting == "samples":
            alphas = inp.num_samples.to(torch.float64)
            if not bool((alphas >= 0).all()) or not bool(alphas.sum() > 0):
                raise ValueError(f"geomed: num_samples must be >= 0 with a positive sum, got {alphas.tolist()}")
        else:
            alphas = torch.ones(n, dtype=torch.float64)
        train = inp.layout.trainable_mask(device=inp.updates.device)
        v, iters, obj, w = smoothed_weiszfeld(inp.updates[:, train], alphas, self.max_iter, self.tol, self.nu)
        accepted = alphas > 0  # a client reporting 0 samples has weight 0
        new = assemble(inp, v, accepted)
        info = {
            "accepted": float(accepted.sum()),
            "iterations": float(iters),
            "objective": obj,
            "min_weight": float(w.min()),
            "max_weight": float(w.max()),
        }
        return Aggregate(new, accepted, info)
