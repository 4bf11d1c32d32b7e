"""Fang et al. (USENIX Security 2020) untargeted attack on Krum, full-knowledge variant (docs/attacks.md, Sources.4).

With m clients of which c are attackers, the benign updates Δ_1..Δ_{m−c} known and the global model G:

* s = sign(mean of the benign updates), the direction the global model would move without attack;
* the crafted model w_1 = G − λ·s, i.e. the update −λ·s;
* λ starts at the Theorem-1 upper bound

      λ_max = 1/((m − 2c − 1)·√d) · min_{i benign} Σ_{l ∈ Γ_i} ‖w_l − w_i‖  +  1/√d · max_{i benign} ‖w_i − G‖

  (Γ_i: the m − c − 2 benign models closest to w_i) and is halved until Krum (with f = c) picks a crafted
  update, or λ < ``lambda_min`` (1e-5), in which case the last λ tried is sent;
* the other c − 1 attackers send w_1 plus a random vector of norm at most ε (default 0.01): a uniform
  direction scaled by ε·u, u ~ U(0, 1).

Deviations (documented): Krum is evaluated in the order of the round's selection with the crafted updates in
the attackers' positions, and "selected" means Krum picks *any* crafted update (they are ε-close, so choosing
one of the other attackers' copies harms the model the same way). Krum is
:func:`fedshield.core.numeric.krum_select` (squared distances, Blanchard et al.; the same scores as the ``krum``
defense) on the trainable coordinates, as the defense computes it. λ uses all d coordinates (BatchNorm
statistics, if any, are crafted like weights).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..core.numeric import krum_select

__all__ = ["fang_lambda_max", "craft_fang_krum"]


def fang_lambda_max(benign: Tensor, c: int) -> float:
    """Theorem-1 upper bound on λ from the (m − c, d) benign updates (distances between local models equal
    distances between updates, and ‖w_i − G‖ = ‖Δ_i‖)."""
    mb, d = benign.shape
    m = mb + c
    u = benign.double()
    dist = torch.cdist(u, u)
    k = m - c - 2
    first = 0.0
    if k >= 1 and m - 2 * c - 1 > 0:
        dist.fill_diagonal_(float("inf"))
        near = dist.topk(min(k, mb - 1), dim=1, largest=False).values.sum(dim=1)
        first = float(near.min()) / ((m - 2 * c - 1) * math.sqrt(d))
    second = float(u.norm(dim=1).max()) / math.sqrt(d)
    return first + second


def _finite_benign(benign: Tensor, attacker_positions: Sequence[int]) -> tuple[Tensor, list[int]]:
    """The benign updates the server will aggregate (rows with NaN/Inf are dropped before any defense sees them)
    and the attackers' positions among those rows and the attackers. NaN in λ_max used to stall the halving loop
    forever (λ/2 < lambda_min is never true for NaN)."""
    keep = torch.isfinite(benign).all(dim=1)
    pos = list(attacker_positions)
    if bool(keep.all()):
        return benign, pos
    if not bool(keep.any()):
        raise ValueError("fang_krum: every benign update of this round is non-finite (NaN/Inf); nothing to craft from "
                         "(lower train.lr)")
    m = benign.shape[0] + len(pos)
    benign_pos = [i for i in range(m) if i not in set(pos)]
    dropped = [benign_pos[j] for j in torch.nonzero(~keep).flatten().tolist()]
    return benign[keep], [p - sum(q < p for q in dropped) for p in pos]


def craft_fang_krum(
    benign: Tensor,
    attacker_positions: Sequence[int],
    generator: torch.Generator,
    eps: float = 0.01,
    lambda_min: float = 1e-5,
    trainable: Optional[Tensor] = None,
) -> tuple[list[Tensor], float, bool]:
    """Crafted updates for the attackers, the λ used, and whether Krum selected a crafted update.

    ``benign``: (m − c, d) benign updates in selection order; ``attacker_positions``: the attackers' indices in
    the full (m, d) matrix; ``trainable`` (d,) bool: the coordinates Krum compares (default all).
    """
    benign, attacker_positions = _finite_benign(benign, attacker_positions)
    c = len(attacker_positions)
    m = benign.shape[0] + c
    d = benign.shape[1]
    s = torch.sign(benign.mean(dim=0))
    # offsets of the other attackers: uniform direction, radius eps * U(0, 1)
    offsets = torch.randn(max(c - 1, 0), d, generator=generator, dtype=benign.dtype)
    offsets = offsets / offsets.norm(dim=1, keepdim=True).clamp_min(1e-12)
    offsets = offsets * (eps * torch.rand(max(c - 1, 0), 1, generator=generator, dtype=benign.dtype))
    pos = list(attacker_positions)
    benign_pos = [i for i in range(m) if i not in set(pos)]
    lam = fang_lambda_max(benign, c)
    chosen = False
    while True:
        w1 = -lam * s
        crafted = [w1] + [w1 + offsets[i] for i in range(c - 1)]
        full = torch.empty(m, d, dtype=benign.dtype)
        full[benign_pos] = benign
        full[pos] = torch.stack(crafted)
        if krum_select(full if trainable is None else full[:, trainable], c) in pos:
            chosen = True
            break
        if lam / 2 < lambda_min:
            break
        lam /= 2
    return crafted, lam, chosen
