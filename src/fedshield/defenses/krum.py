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

The distances and scores are :func:`fedshield.core.numeric.pairwise_sq_distances` and
:func:`fedshield.core.numeric.krum_scores` (also used by Bulyan and by Fang et al.'s attack on Krum).
"""

from __future__ import annotations

import torch

from ..core.numeric import is_bool, is_int, krum_scores, mean_rows, pairwise_sq_distances
from .base import Aggregate, Defense, RoundInput, assemble, require
from .registry import register

__all__ = ["Krum", "MultiKrum", "pairwise_sq_distances", "krum_scores"]


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
        require(is_bool(squared), "squared", squared, "allowed: True, False")
        self.f = int(f)
        self.m = m
        self.squared = squared

    def _m_for(self, n: int) -> int:
        m = n - self.f if self.m is None else self.m
        if m > n:
            raise ValueError(f"{self.name}: m={m} exceeds the number of clients n={n}; allowed 1 <= m <= n")
        return m

    def min_clients(self) -> int:
        """Krum's assumption 2f + 2 < n, and m updates to average."""
        return max(2 * self.f + 3, self.m or 1)

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
        delta = mean_rows(u_tr[accepted])
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
