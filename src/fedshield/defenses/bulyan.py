"""Bulyan (El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed Learning in Byzantium",
ICML 2018), on top of Krum (krum.py); docs/defenses.md, Bulyan. Its paper was not re-read for
this project: the two steps below are the published rule as commonly stated [U on line numbers].

Requires n ≥ 4f + 3. With θ = n − 2f and β = θ − 2f:

1. selection: recursively apply Krum θ times to the remaining set R (start R = all n updates), each time moving
   the chosen update from R to the selection set S;
2. aggregation, per coordinate k: of the θ values S_k, keep the β closest to their median and average them.

Choices the paper leaves open [U]:

* in step 1 the Krum neighbour count is r − f − 2 for the current remaining-set size r, floored at 1 (for f ≤ 1 it
  would otherwise reach 0 in the last iterations, where every score would tie); the pairwise distances are
  computed once (one matmul) and reused for every iteration;
* the median in step 2 is the usual one (mean of the two middle values when θ is even); ties in |x − median|
  keep the value that comes first in sorted order;
* ``accepted`` marks the θ Krum-selected updates: each of them contributes to the coordinates where it is among
  the β central values, and no other update contributes anywhere;
* batch-norm buffers are the plain mean over the θ selected clients (docs/defenses.md, Conventions.3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.numeric import is_bool, is_int, krum_scores, pairwise_sq_distances
from .base import Aggregate, Defense, RoundInput, assemble, require
from .registry import register

__all__ = ["Bulyan", "bulyan_select", "central_mean"]


def bulyan_select(d2: Tensor, f: int, theta: int, squared: bool = True) -> list[int]:
    """Indices chosen by θ recursive Krum selections on the squared-distance matrix ``d2`` (step 1)."""
    remaining = list(range(d2.shape[0]))
    chosen: list[int] = []
    for _ in range(theta):
        idx = torch.tensor(remaining, dtype=torch.long, device=d2.device)
        sub = d2[idx][:, idx]
        r = len(remaining)
        scores = krum_scores(sub, max(r - f - 2, 1), squared)
        best = int(torch.sort(scores, stable=True).indices[0])  # ties → smallest original index (R is sorted)
        chosen.append(remaining.pop(best))
    return chosen


def central_mean(values: Tensor, beta: int) -> Tensor:
    """Per column of ``values`` (θ, d): mean of the ``beta`` entries closest to the column's median (step 2)."""
    theta = values.shape[0]
    srt = torch.sort(values, dim=0).values
    if theta % 2 == 1:
        med = srt[theta // 2]
    else:
        med = 0.5 * (srt[theta // 2 - 1] + srt[theta // 2])
    dev = (srt - med.unsqueeze(0)).abs()
    keep = torch.sort(dev, dim=0, stable=True).indices[:beta]
    return torch.gather(srt, 0, keep).mean(dim=0)


@register
class Bulyan(Defense):
    """Bulyan: θ = n − 2f recursive Krum selections, then per coordinate the mean of the β = θ − 2f values closest
    to the median (El Mhamdi et al. 2018). Needs n ≥ 4f + 3.

    Parameters
    ----------
    f:
        number of Byzantine clients tolerated (default 1, so at least 7 clients per round). n < 4f + 3 raises a
        ``ValueError`` naming ``f`` and ``n`` at aggregation time.
    squared:
        Krum scores with squared (default, as in Krum) or plain distances.
    """

    name = "bulyan"
    summary = "Recursive Krum selection of n-2f updates, then per-coordinate mean of the values closest to the median"
    paper = "El Mhamdi, Guerraoui, Rouault, The Hidden Vulnerability of Distributed Learning in Byzantium, ICML 2018"

    def __init__(self, f: int = 1, squared: bool = True):
        require(is_int(f) and f >= 0, "f", f, "allowed: an integer >= 0 with n >= 4f + 3")
        require(is_bool(squared), "squared", squared, "allowed: True, False")
        self.f = int(f)
        self.squared = squared

    def min_clients(self) -> int:
        """Bulyan's n >= 4f + 3."""
        return 4 * self.f + 3

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n, f = inp.n, self.f
        if n < 4 * f + 3:
            raise ValueError(f"bulyan: f={f} needs n >= 4f + 3 = {4 * f + 3} clients, but this round has n={n}")
        theta = n - 2 * f
        beta = theta - 2 * f
        train = inp.layout.trainable_mask(device=inp.updates.device)
        u_tr = inp.updates[:, train]
        chosen = bulyan_select(pairwise_sq_distances(u_tr), f, theta, self.squared)
        accepted = torch.zeros(n, dtype=torch.bool, device=inp.updates.device)
        accepted[chosen] = True
        delta = central_mean(u_tr[accepted], beta)
        new = assemble(inp, delta, accepted)
        info = {"accepted": float(theta), "f": float(f), "theta": float(theta), "beta": float(beta)}
        return Aggregate(new, accepted.cpu(), info)
