"""FoolsGold (Fung, Yoon, Beschastnikh, "Mitigating Sybils in Federated Learning Poisoning", arXiv 1808.04866 /
RAID 2020), Algorithm 1 (docs/defenses.md, FoolsGold):

1. history: H_i ← H_i + Δ_i for every client of the round (H_i kept per client id across rounds);
2. cs_ij = cos(H_i, H_j) with the diagonal removed; v_i = max_j cs_ij;
3. pardoning: if v_i < v_j then cs_ij ← cs_ij · v_i / v_j;
4. w_i = 1 − max_j cs_ij, clipped to [0, 1]; w ← w / max(w);
5. logit: w = 1 is replaced by 0.99, then w ← κ (ln(w / (1 − w)) + 0.5), clipped to [0, 1];
6. update: G ← G + Σ_k w_k Δ_k / Σ_k w_k (default ``normalize=True``); the literal sum G ← G + Σ_k w_k Δ_k with
   ``normalize=False``.

Notes and choices:

* Step 5 typesetting: the paper prints "ln(w/(1−w) + 0.5)"; the authors' code and the Fedward port put the +0.5
  outside the logarithm (docs/defenses.md, FoolsGold). We follow the code: ln(w/(1−w)) + 0.5. w = 0 gives −∞ → 0.
* "Diagonal removed" is implemented as in the authors' code, cs − I: the diagonal becomes 0, so v_i ≥ 0 and the
  maxima in steps 2 and 4 are taken over j ≠ i together with 0. This only matters when all of a client's
  similarities are negative (w_i = 1 either way) and keeps the pardoning ratio v_i / v_j well defined.
* Only the clients present in the round are compared (the paper has every client in every iteration).
* The optional "indicative features" importance weighting of the paper is not implemented: every trainable
  coordinate counts equally (the paper's default configuration without importance). κ (confidence) defaults to 1.
* If every weight is 0 (e.g. all histories identical) the global model's trainable part is unchanged.
* Histories live in ``self.history`` (client id → float32 tensor of the trainable coordinates), a plain dict of
  tensors, so the defense pickles with checkpoints.
* Batch-norm buffers are the plain mean over the clients with w > 0 (docs/defenses.md, Conventions.3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.numeric import cosine_distances, is_bool, is_finite_number
from .base import Aggregate, Defense, RoundInput, assemble, require
from .registry import register

__all__ = ["FoolsGold", "foolsgold_weights"]


def foolsgold_weights(histories: Tensor, kappa: float = 1.0) -> Tensor:
    """Float64 (n,) FoolsGold weights in [0, 1] from the (n, d) per-client histories (Alg. 1, steps 2–5)."""
    n = histories.shape[0]
    cs = 1.0 - cosine_distances(histories)  # cos similarity, float64, diagonal exactly 1
    cs.fill_diagonal_(0.0)  # cs − I
    v = cs.max(dim=1).values if n > 1 else torch.zeros(n, dtype=torch.float64)
    # pardoning: cs_ij ← cs_ij · v_i / v_j where v_i < v_j (then v_j > v_i ≥ 0)
    pardon = v.unsqueeze(1) < v.unsqueeze(0)
    ratio = v.unsqueeze(1) / torch.where(pardon, v.unsqueeze(0), torch.ones_like(cs))
    cs = torch.where(pardon, cs * ratio, cs)
    w = (1.0 - (cs.max(dim=1).values if n > 1 else torch.zeros(n, dtype=torch.float64))).clamp(0.0, 1.0)
    top = w.max()
    if not bool(top > 0):
        return torch.zeros(n, dtype=torch.float64)
    w = w / top
    w = torch.where(w == 1.0, torch.full_like(w, 0.99), w)
    with torch.no_grad():
        logit = kappa * (torch.log(w / (1.0 - w)) + 0.5)  # ln(0) = −inf → clipped to 0 below
    return torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)


@register
class FoolsGold(Defense):
    """FoolsGold: down-weight clients whose update histories are too similar (sybils) (Fung et al., Alg. 1).

    Parameters
    ----------
    kappa:
        confidence κ > 0 of the logit (default 1, the paper's value).
    normalize:
        True (default) divides by Σ_k w_k: a weighted average. False is the paper's step 6
        (docs/defenses.md, FoolsGold), G ← G + Σ_k w_k Δ_k, a weighted *sum*: right when each Δ_k is one SGD
        gradient step (FoolsGold's own setting), but with multi-epoch FL updates it is about n times a FedAvg step and diverged in our
        Fashion-MNIST run (lenet, 10 clients per round: MA 0.10 after 10 rounds).

    ``accepted`` = w > 0. ``info``: min/max weight, number of clients with weight 0.
    """

    name = "foolsgold"
    summary = "Weight clients by 1 - max cosine similarity of their update histories (sybils get weight 0)"
    paper = "Fung, Yoon, Beschastnikh, Mitigating Sybils in Federated Learning Poisoning, arXiv 1808.04866 (RAID 2020)"

    def __init__(self, kappa: float = 1.0, normalize: bool = True):
        require(is_finite_number(kappa) and kappa > 0,
                "kappa", kappa, "allowed: a finite number > 0")
        require(is_bool(normalize), "normalize", normalize, "allowed: True, False")
        self.kappa = float(kappa)
        self.normalize = normalize
        self.history: dict[int, Tensor] = {}

    def __repr__(self) -> str:
        return f"FoolsGold(kappa={self.kappa!r}, normalize={self.normalize!r})"

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        train = inp.layout.trainable_mask(device=inp.updates.device)
        u_tr = inp.updates[:, train]
        d = u_tr.shape[1]
        rows = []
        for i, cid in enumerate(inp.client_ids):
            cid = int(cid)
            h = self.history.get(cid)
            if h is None:
                h = torch.zeros(d, dtype=torch.float32)
            elif h.shape != (d,):
                raise ValueError(f"foolsgold: stored history of client {cid} has {h.shape[0]} entries, updates have {d}")
            h = h + u_tr[i].detach().to(device="cpu", dtype=torch.float32)
            self.history[cid] = h
            rows.append(h)
        w = foolsgold_weights(torch.stack(rows), self.kappa)
        accepted = w > 0
        total = float(w.sum())
        if total > 0:
            coeff = (w / total) if self.normalize else w
            delta = (u_tr * coeff.to(device=u_tr.device, dtype=u_tr.dtype).unsqueeze(1)).sum(dim=0)
        else:
            delta = None
        new = assemble(inp, delta, accepted)
        info = {
            "accepted": float(accepted.sum()),
            "min_weight": float(w.min()),
            "max_weight": float(w.max()),
            "num_zero_weight": float((w == 0).sum()),
            "weight_sum": total,
        }
        return Aggregate(new, accepted, info)
