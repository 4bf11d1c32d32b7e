"""Adaptive Federated Averaging (Muñoz-González, Co, Lupu, "Byzantine-Robust Federated Machine Learning through
Adaptive Model Averaging", arXiv 1909.05125, 2019).

AFA was **not researched** for this project (docs/defenses.md, AFA): the paper's text was not read. What is
below follows the algorithm as it is commonly summarised; every detail that could not be checked against the
paper is tagged [U].

Per round, among the clients that are not blocked:

1. good set G = all of them; ξ = ξ₀ (default 2);
2. repeat:
   a. M = Σ_{k∈G} p_k n_k Δ_k / Σ_{k∈G} p_k n_k, with p_k = α_k / (α_k + β_k) the client's expected reputation
      [U: reputation-times-samples weights];
   b. s_k = cos(Δ_k, M) for k ∈ G; μ, m̃, σ = mean, median, standard deviation of the s_k [U: population std,
      usual median with the mean of the two middle values];
   c. if μ < m̃ remove from G every k with s_k < m̃ − ξσ, else every k with s_k > m̃ + ξσ;
   d. ξ ← ξ + Δξ (default 0.5); stop when nothing was removed;
3. the aggregate is M over the final G: G_t = G_{t−1} + M;
4. reputation (Beta–Bernoulli model per client id): α_k += 1 for k ∈ G, β_k += 1 for the removed ones; prior
   α₀ = β₀ = 3 [U]. With ``block=True`` a client is blocked for all later rounds when P(p_k < 0.5) under
   Beta(α_k, β_k) exceeds δ = 0.95 (the regularised incomplete beta function I_{0.5}(α_k, β_k)).

Blocked clients never enter the aggregate (accepted = False). Cosines use the trainable coordinates only (float64);
batch-norm buffers are the plain mean over the accepted clients (docs/defenses.md, Conventions.3). The reputation
state is a pair of plain dicts keyed by client id plus a dict of blocked ids, so the defense pickles with
checkpoints.
"""

from __future__ import annotations

import torch
from scipy.special import betainc
from torch import Tensor

from ..core.numeric import is_bool, is_finite_number, median, weighted_mean
from .base import Aggregate, Defense, RoundInput, assemble, require
from .registry import register

__all__ = ["AFA", "afa_filter"]


def afa_filter(
    updates: Tensor, weights: Tensor, xi0: float = 2.0, delta_xi: float = 0.5
) -> tuple[Tensor, Tensor, int, float]:
    """Step 2: (good mask, final aggregate over the good set, iterations, final ξ) for the rows of ``updates``."""
    n = updates.shape[0]
    good = torch.ones(n, dtype=torch.bool, device=updates.device)
    xi = float(xi0)
    iterations = 0
    x64 = updates.to(torch.float64)
    norms = torch.linalg.vector_norm(x64, dim=1)
    while True:
        iterations += 1
        agg = weighted_mean(updates[good], weights[good])
        if int(good.sum()) <= 2:
            break  # fewer than 3 similarities: no meaningful spread to test [U]
        a64 = agg.to(torch.float64)
        a_norm = torch.linalg.vector_norm(a64)
        denom = (norms * a_norm).clamp_min(torch.finfo(torch.float64).tiny)
        sims = (x64 @ a64) / denom
        s = sims[good]
        mu, med, sd = float(s.mean()), float(median(s)), float(s.std(unbiased=False))
        if mu < med:
            bad = good & (sims < med - xi * sd)
        else:
            bad = good & (sims > med + xi * sd)
        xi += delta_xi
        if not bool(bad.any()):
            break
        good = good & ~bad
    return good, agg, iterations, xi


@register
class AFA(Defense):
    """Adaptive Federated Averaging: iterative cosine-to-aggregate filtering plus Bayesian blocking [partly U].

    Parameters
    ----------
    xi0:
        initial threshold ξ₀ in standard deviations (default 2).
    delta_xi:
        increment Δξ of ξ per filtering iteration (default 0.5).
    block:
        keep per-client Beta reputations and block clients with P(p < 0.5) > ``block_threshold`` (default True).
    block_threshold:
        δ in (0, 1) (default 0.95).
    prior_alpha, prior_beta:
        Beta prior of every new client (default 3 and 3) [U].
    weighting:
        ``"samples"`` (default: weights p_k · n_k) or ``"uniform"`` (weights p_k).

    ``accepted``: the final good set (blocked clients are False). ``info``: removed this round, blocked in
    total, filtering iterations, final ξ.
    """

    name = "afa"
    summary = "Adaptive Federated Averaging: drop updates whose cosine to the aggregate is an outlier; block bad clients"
    paper = "Muñoz-González, Co, Lupu, Byzantine-Robust Federated Machine Learning through Adaptive Model Averaging, arXiv 1909.05125, 2019"

    def __init__(self, xi0: float = 2.0, delta_xi: float = 0.5, block: bool = True, block_threshold: float = 0.95,
                 prior_alpha: float = 3.0, prior_beta: float = 3.0, weighting: str = "samples"):
        require(is_finite_number(xi0) and xi0 > 0, "xi0", xi0, "allowed: a finite number > 0")
        require(is_finite_number(delta_xi) and delta_xi >= 0, "delta_xi", delta_xi, "allowed: a finite number >= 0")
        require(is_bool(block), "block", block, "allowed: True, False")
        require(is_finite_number(block_threshold) and 0 < block_threshold < 1, "block_threshold", block_threshold,
                "allowed: 0 < block_threshold < 1")
        require(is_finite_number(prior_alpha) and prior_alpha > 0, "prior_alpha", prior_alpha, "allowed: a finite number > 0")
        require(is_finite_number(prior_beta) and prior_beta > 0, "prior_beta", prior_beta, "allowed: a finite number > 0")
        require(weighting in ("samples", "uniform"), "weighting", weighting, "allowed: 'samples', 'uniform'")
        self.xi0 = float(xi0)
        self.delta_xi = float(delta_xi)
        self.block = block
        self.block_threshold = float(block_threshold)
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.weighting = weighting
        self.alpha: dict[int, float] = {}
        self.beta: dict[int, float] = {}
        self.blocked: dict[int, int] = {}  # client id → round in which it was blocked

    def __repr__(self) -> str:
        return (f"AFA(xi0={self.xi0!r}, delta_xi={self.delta_xi!r}, block={self.block!r}, "
                f"block_threshold={self.block_threshold!r}, prior_alpha={self.prior_alpha!r}, "
                f"prior_beta={self.prior_beta!r}, weighting={self.weighting!r})")

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        ids = [int(c) for c in inp.client_ids]
        for cid in ids:
            self.alpha.setdefault(cid, self.prior_alpha)
            self.beta.setdefault(cid, self.prior_beta)
        active = torch.tensor([cid not in self.blocked for cid in ids], dtype=torch.bool)
        rep = torch.tensor([self.alpha[c] / (self.alpha[c] + self.beta[c]) for c in ids], dtype=torch.float64)
        if self.weighting == "samples":
            base = inp.num_samples.to(torch.float64).cpu()
        else:
            base = torch.ones(n, dtype=torch.float64)
        weights = rep * base
        train = inp.layout.trainable_mask(device=inp.updates.device)
        u_tr = inp.updates[:, train]
        accepted = torch.zeros(n, dtype=torch.bool)
        iterations, xi = 0, self.xi0
        delta = None
        if bool(active.any()) and bool(weights[active].sum() > 0):
            idx = torch.nonzero(active).flatten()
            good, delta, iterations, xi = afa_filter(
                u_tr[idx.to(u_tr.device)], weights[idx].to(u_tr.device), self.xi0, self.delta_xi
            )
            accepted[idx[good.cpu()]] = True
        evaluated = active
        removed = evaluated & ~accepted
        newly_blocked = 0
        for i, cid in enumerate(ids):
            if not bool(evaluated[i]):
                continue
            if bool(accepted[i]):
                self.alpha[cid] += 1.0
            else:
                self.beta[cid] += 1.0
            if self.block and float(betainc(self.alpha[cid], self.beta[cid], 0.5)) > self.block_threshold:
                self.blocked[cid] = int(inp.round)
                newly_blocked += 1
        new = assemble(inp, delta, accepted)
        info = {
            "accepted": float(accepted.sum()),
            "removed": float(removed.sum()),
            "skipped_blocked": float((~active).sum()),
            "newly_blocked": float(newly_blocked),
            "blocked_total": float(len(self.blocked)),
            "iterations": float(iterations),
            "xi_final": float(xi),
        }
        return Aggregate(new, accepted, info)
