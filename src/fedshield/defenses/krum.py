"""Krum and Multi-Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent",
NIPS 2017; docs/defenses.md, Krum).

For each of the n updates V_i the score is (the paper's definition of Krum; docs/defenses.md, Krum [P])

    s(i) = Σ_{j ∈ N_i} ‖V_i − V_j‖²,   N_i = the n − f − 2 updates closest to V_i (i itself excluded),

Krum returns the V_i with the smallest score (ties → the smallest index) and needs 2f + 2 < n. Multi-Krum (the
paper's variant) averages the m updates with the lowest scores: m = 1 is Krum, m = n is plain averaging;
the paper's experiments use m = n − f.

All pairwise distances come from one matmul, ‖a‖² + ‖b‖² − 2⟨a, b⟩ clamped at 0, in float64. Only trainable
coordinates enter the distances; batch-norm buffers (layout kind ``"buffer"``) are averaged plainly over the
selected clients (docs/defenses.md, Conventions.3).

This module also holds two helpers shared by the other baselines: :func:`pairwise_sq_distances` and
:func:`assemble` (new global model from an aggregated trainable update plus the buffers' plain mean).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Aggregate, Defense, RoundInput, require
from .registry import register

__all__ = ["Krum", "MultiKrum", "pairwise_sq_distances", "krum_scores", "assemble", "is_int"]


def is_int(x: object) -> bool:
    """True for a Python/NumPy-free integer that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def pairwise_sq_distances(x: Tensor) -> Tensor:
    """(n, n) float64 squared Euclidean distances of the rows of ``x``: ‖a‖² + ‖b‖² − 2⟨a, b⟩ (one matmul).

    Clamped at 0 (rounding can make it slightly negative), symmetrised, with an exact zero diagonal.
    """
    x = x.to(torch.float64)
    sq = (x * x).sum(dim=1)
    d2 = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (x @ x.T)
    d2 = d2.clamp_(min=0.0)
    d2 = 0.5 * (d2 + d2.T)
    d2.fill_diagonal_(0.0)
    return d2


def krum_scores(d2: Tensor, num_neighbours: int, squared: bool = True) -> Tensor:
    """s(i) = sum of the ``num_neighbours`` smallest distances from i to the others (i excluded).

    ``d2`` holds squared distances; with ``squared=False`` their square roots are summed instead (the FLAIN
    authors' code). Returns float64 (n,).
    """
    n = d2.shape[0]
    dist = d2 if squared else d2.sqrt()
    if num_neighbours <= 0 or n <= 1:
        return torch.zeros(n, dtype=torch.float64, device=d2.device)
    off = dist.clone()
    off.fill_diagonal_(float("inf"))
    closest = torch.sort(off, dim=1).values[:, :num_neighbours]
    return closest.sum(dim=1)


def assemble(inp: RoundInput, train_delta: Tensor | None, admitted: Tensor, scale: float = 1.0) -> Tensor:
    """G_{t−1} + scale · ``train_delta`` on trainable coordinates; buffers: G + plain mean over ``admitted``.

    ``train_delta`` is the aggregated update restricted to trainable coordinates (``None`` → no change). When no
    client is admitted the buffers keep their previous values.
    """
    g = inp.global_params
    train = inp.layout.trainable_mask(device=g.device)
    new = g.clone()
    if train_delta is not None:
        new[train] = g[train] + scale * train_delta.to(dtype=g.dtype, device=g.device)
    buf = ~train
    admitted = admitted.to(g.device)
    if bool(buf.any()) and bool(admitted.any()):
        new[buf] = g[buf] + inp.updates[admitted][:, buf].mean(dim=0)
    return new


@register
class MultiKrum(Defense):
    """Multi-Krum: average of the ``m`` updates with the lowest Krum scores (Blanchard et al. 2017).

    Parameters
    ----------
    f:
        number of Byzantine clients tolerated (default 1). At aggregation time 2f + 2 < n is required, else a
        ``ValueError`` naming ``f`` and ``n``. Each score sums the distances to the n − f − 2 nearest neighbours.
    m:
        number of updates averaged; ``None`` (default) means n − f, the paper's experimental setting. m must be
        ≤ n at aggregation time. m = 1 is Krum, m = n is the plain mean.
    squared:
        True (default, the paper): scores sum squared distances. False: plain distances (FLAIN authors' code).

    The selected updates are averaged uniformly (the paper averages; sample counts are not used). ``accepted``
    marks exactly the m selected updates. Ties in the score go to the smallest index (stable sort).
    """

    name = "multi_krum"
    summary = "Average of the m updates with the lowest Krum scores (sum of distances to the n-f-2 nearest)"
    paper = "Blanchard et al., Machine Learning with Adversaries: Byzantine Tolerant Gradient Descent, NIPS 2017"

    def __init__(self, f: int = 1, m: int | None = None, squared: bool = True):
        require(is_int(f) and f >= 0, "f", f, "allowed: an integer >= 0 with 2f + 2 < n")
        require(m is None or (is_int(m) and m >= 1), "m", m, "allowed: None (n - f) or an integer in 1..n")
        require(isinstance(squared, bool), "squared", squared, "allowed: True, False")
        self.f = int(f)
        self.m = m
        self.squared = squared

    def _m_for(self, n: int) -> int:
        m = n - self.f if self.m is None else self.m
        if m > n:
            raise ValueError(f"{self.name}: m={m} exceeds the number of clients n={n}; allowed 1 <= m <= n")
        return m

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        f = self.f
        if not 2 * f + 2 < n:
            raise ValueError(
                f"{self.name}: f={f} needs 2f + 2 < n, i.e. n >= {2 * f + 3} clients, but this round has n={n}"
            )
        m = self._m_for(n)
        train = inp.layout.trainable_mask(device=inp.updates.device)
        u_tr = inp.updates[:, train]
        scores = krum_scores(pairwise_sq_distances(u_tr), n - f - 2, self.squared)
        order = torch.sort(scores, stable=True).indices  # ties → smallest index
        chosen = order[:m]
        accepted = torch.zeros(n, dtype=torch.bool, device=inp.updates.device)
        accepted[chosen] = True
        delta = u_tr[accepted].mean(dim=0)
        new = assemble(inp, delta, accepted)
        info = {
            "accepted": float(m),
            "f": float(f),
            "m": float(m),
            "selected": float(order[0]),  # the Krum choice (lowest score)
            "min_score": float(scores[order[0]]),
            "max_selected_score": float(scores[order[m - 1]]),
        }
        return Aggregate(new, accepted.cpu(), info)


@register
class Krum(MultiKrum):
    """Krum: the single update with the lowest score s(i) (Blanchard et al. 2017, definition of Krum).

    Parameters: ``f`` (default 1; 2f + 2 < n required at aggregation time) and ``squared`` (default True). The next
    global model is G + V_{i*}; ``accepted`` is True only for i*. Ties go to the smallest index.
    """

    name = "krum"
    summary = "Keep the single update with the lowest Krum score (sum of squared distances to its n-f-2 nearest)"

    def __init__(self, f: int = 1, squared: bool = True):
        super().__init__(f=f, m=1, squared=squared)

    def _m_for(self, n: int) -> int:
        return 1

    def __repr__(self) -> str:
        return f"Krum(f={self.f!r}, squared={self.squared!r})"
