"""Fedward (Chen, Wang, Zheng, Liu, Lin, "Fedward: Flexible Federated Backdoor Defense Framework with Non-IID
Data", IEEE ICME 2023; arXiv 2307.00356).

Paper variant (default; the paper's Algorithms 1–2, Eqs. 3–4; docs/defenses.md, Fedward.1 and Fedward.2):

* AmGrad (Alg. 1 line 6, Eq. 3): per layer l of each update, A[l] = Sign(Δ[l]) · Max(Abs(Δ[l]));
* AutoOPTICS (Alg. 2): M = pairwise Euclidean distances of the AmGrad vectors (line 2); mins = ⌈m/2⌉ + 1
  (line 3); eps = Median(Top_mins(Sort(M))) (lines 4–5), read as: sort each row ascending, take the row's
  mins-th smallest value (self at position 1), median over rows; OPTICS(min_samples=mins, eps,
  cluster_method="dbscan") on M (line 6); inds = the largest cluster;
* adaptive clipping (Alg. 1 lines 12–18, Eq. 4): Norm = the L2 norms of all m raw updates, sorted ascending;
  ρ = Norm_{|inds|}; C_k = Δ_k / Max(1, Norm_k / ρ); G_{t+1} = G_t + (1/|inds|) Σ C_k.

``variant="authors_code"`` reproduces the released code instead (docs/defenses.md, Fedward.3): sparsifying AmGrad
sign·round(|x|/max)·max, OPTICS min_samples = m//2, eps from column m//2 of the row-sorted distances, all-noise →
G unchanged, α_i = ‖Δ_i‖₁/d, S = median(α) over all m, G + Σ_{admitted} sign(Δ_i)·min(α_i, S) (a sum).

Batch-norm buffers (layout kind ``"buffer"``) take no part in AmGrad, distances, norms or clipping; they are
aggregated by the plain mean of the admitted clients' values (docs/defenses.md, Conventions.3).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.cluster import OPTICS
from torch import Tensor

from ..core.numeric import clip_updates, median
from ..models import ParamLayout
from .base import Aggregate, Defense, RoundInput, require
from .flame import largest_cluster
from .registry import register

__all__ = [
    "Fedward",
    "amgrad",
    "euclidean_distances",
    "autooptics_eps",
    "autooptics_min_samples",
    "fedward_clip_bound",
]

_VARIANT_DEFAULTS = {
    "paper": {"amgrad": "sign_max", "min_samples_rule": "paper", "clip": "paper", "all_noise_policy": "reject_all"},
    "authors_code": {"amgrad": "sparsify", "min_samples_rule": "code", "clip": "code", "all_noise_policy": "reject_all"},
}


def amgrad(updates: Tensor, layout: ParamLayout, mode: str = "sign_max") -> Tensor:
    """AmGrad of every row of ``updates`` (n, d) → (n, d_trainable), layer by layer over the trainable entries.

    ``mode="sign_max"`` (paper, Eq. 3): Sign(l) · Max(Abs(l)) for each layer tensor l.
    ``mode="sparsify"`` (authors' code): sign(l) · round(|l| / max|l|) · max|l|, i.e. entries above half the layer
    maximum become ±max and the others 0; rounding is half-to-even (exactly max/2 → 0), as numpy's.
    A layer whose maximum is 0 maps to 0 (the code would produce NaN; docs/defenses.md, Conventions.4).
    """
    if mode not in ("sign_max", "sparsify"):
        raise ValueError(f"amgrad mode {mode!r}; allowed: 'sign_max', 'sparsify'")
    parts = []
    for e in layout.trainable_entries():
        block = updates[:, e.slice]
        mx = block.abs().amax(dim=1, keepdim=True)
        sign = torch.sign(block)
        if mode == "sign_max":
            out = sign * mx
        else:
            safe = torch.where(mx > 0, mx, torch.ones_like(mx))
            out = sign * torch.round(block.abs() / safe) * mx
        parts.append(torch.where(mx > 0, out, torch.zeros_like(out)))
    if not parts:
        return updates.new_zeros((updates.shape[0], 0))
    return torch.cat(parts, dim=1)


def euclidean_distances(x: Tensor) -> Tensor:
    """(n, n) float64 pairwise Euclidean distances of the rows of ``x`` (Alg. 2 line 2), from one Gram matmul."""
    x = x.to(torch.float64)
    sq = (x * x).sum(dim=1)
    d2 = sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * (x @ x.T)
    d = d2.clamp_min_(0.0).sqrt_()
    d = 0.5 * (d + d.T)
    d.fill_diagonal_(0.0)
    return d


def autooptics_min_samples(m: int, rule: str = "paper") -> int:
    """mins = ⌈m/2⌉ + 1 (Alg. 2 line 3, ``rule="paper"``) or m // 2 (``rule="code"``)."""
    if rule == "paper":
        return math.ceil(m / 2) + 1
    if rule == "code":
        return m // 2
    raise ValueError(f"min_samples rule {rule!r}; allowed: 'paper', 'code'")


def autooptics_eps(dist: Tensor, column: int) -> float:
    """eps = median over rows of each row's ``column``-th entry after sorting it ascending (Alg. 2 lines 4–5).

    Column 0 holds the zero self-distance, so ``column = mins − 1`` is the row's mins-th smallest distance, its
    core distance in scikit-learn's convention. The median is the usual one (mean of the two middle values for an
    even number of rows), as ``np.median`` in the authors' code.
    """
    m = dist.shape[0]
    if not 0 <= column < m:
        raise ValueError(f"eps column {column} out of range for {m} clients")
    rows = torch.sort(dist.to(torch.float64), dim=1).values[:, column]
    return float(median(rows))


def fedward_clip_bound(norms: Tensor, num_admitted: int) -> Tensor:
    """ρ_clip = Norm_{|inds|} (Alg. 1 line 13, Eq. 4): the |inds|-th smallest of all m norms (1-based)."""
    if not 1 <= num_admitted <= norms.numel():
        raise ValueError(f"|inds|={num_admitted} out of range for {norms.numel()} norms")
    return torch.sort(norms.reshape(-1)).values[num_admitted - 1].clone()


@register
class Fedward(Defense):
    """Fedward: AmGrad, AutoOPTICS clustering and adaptive clipping (paper Alg. 1–2).

    Parameters
    ----------
    variant:
        ``"paper"`` (default) or ``"authors_code"``; sets the defaults of the four options below, any of which
        can be overridden individually.
    amgrad:
        ``"sign_max"`` (paper Eq. 3) or ``"sparsify"`` (code: sign·round(|x|/max)·max).
    min_samples_rule:
        ``"paper"``: OPTICS min_samples = ⌈m/2⌉+1 and eps from each row's mins-th smallest distance (column
        mins−1); ``"code"``: min_samples = m//2 and eps from column m//2 (identical eps for even m).
    clip:
        ``"paper"``: ρ = |inds|-th smallest L2 norm, G + mean over admitted of Δ_i·min(1, ρ/‖Δ_i‖);
        ``"code"``: α_i = ‖Δ_i‖₁/d, S = median(α) over all m, G + Σ_admitted sign(Δ_i)·min(α_i, S).
    all_noise_policy:
        if OPTICS labels every client noise (the paper is silent): ``"reject_all"`` (default, the code's
        behaviour: nobody admitted, G unchanged) or ``"admit_all"``. ``info["all_noise"]`` is 1.0 either way.

    The defense is applied in every round it is called for (the authors' code runs it only in attack rounds and
    plain FedAvg otherwise; a defense cannot know which rounds those are).
    """

    name = "fedward"
    summary = "AmGrad sign-magnitude features, AutoOPTICS clustering and |inds|-th-norm adaptive clipping"
    paper = ("Chen et al., Fedward: Flexible Federated Backdoor Defense Framework with Non-IID Data, "
             "IEEE ICME 2023 (arXiv 2307.00356)")

    def __init__(
        self,
        variant: str = "paper",
        amgrad: str | None = None,
        min_samples_rule: str | None = None,
        clip: str | None = None,
        all_noise_policy: str | None = None,
    ):
        require(isinstance(variant, str) and variant in _VARIANT_DEFAULTS, "variant", variant, "allowed: 'paper', 'authors_code'")
        d = _VARIANT_DEFAULTS[variant]
        amgrad = d["amgrad"] if amgrad is None else amgrad
        min_samples_rule = d["min_samples_rule"] if min_samples_rule is None else min_samples_rule
        clip = d["clip"] if clip is None else clip
        all_noise_policy = d["all_noise_policy"] if all_noise_policy is None else all_noise_policy
        require(amgrad in ("sign_max", "sparsify"), "amgrad", amgrad, "allowed: 'sign_max', 'sparsify'")
        require(min_samples_rule in ("paper", "code"), "min_samples_rule", min_samples_rule,
                "allowed: 'paper' (ceil(m/2)+1), 'code' (m//2)")
        require(clip in ("paper", "code"), "clip", clip, "allowed: 'paper', 'code'")
        require(all_noise_policy in ("reject_all", "admit_all"), "all_noise_policy", all_noise_policy,
                "allowed: 'reject_all', 'admit_all'")
        self.variant = variant
        self.amgrad = amgrad
        self.min_samples_rule = min_samples_rule
        self.clip = clip
        self.all_noise_policy = all_noise_policy

    def _eps_column(self, m: int, mins: int) -> int:
        return mins - 1 if self.min_samples_rule == "paper" else m // 2

    def _autooptics(self, feats: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Alg. 2: (admitted mask, info) from the AmGrad vectors."""
        m = feats.shape[0]
        mins = autooptics_min_samples(m, self.min_samples_rule)
        if mins < 2 or mins > m:
            need = "at least 4 clients (m//2 >= 2)" if self.min_samples_rule == "code" else "at least 2 clients"
            raise ValueError(
                f"fedward: OPTICS min_samples={mins} (rule {self.min_samples_rule!r}) is impossible with m={m} "
                f"clients in the round; it needs {need}"
            )
        dist = euclidean_distances(feats)
        eps = autooptics_eps(dist, self._eps_column(m, mins))
        optics = OPTICS(min_samples=mins, max_eps=np.inf, eps=eps, cluster_method="dbscan", metric="precomputed")
        labels = np.asarray(optics.fit(dist.cpu().numpy()).labels_)
        mask, num_clusters = largest_cluster(labels)
        all_noise = num_clusters == 0
        if all_noise:
            mask = np.full(m, self.all_noise_policy == "admit_all")
        info = {"eps": eps, "min_samples": float(mins), "num_clusters": float(num_clusters),
                "all_noise": float(all_noise)}
        return torch.from_numpy(mask.astype(bool)), info

    def min_clients(self) -> int:
        """OPTICS' min_samples must lie in 2..m: m >= 2 (rule ``paper``) or m >= 4 (rule ``code``)."""
        return 4 if self.min_samples_rule == "code" else 2

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        g = inp.global_params
        upd = inp.updates
        train = inp.layout.trainable_mask(device=upd.device)
        buf = ~train
        u_tr = upd[:, train]

        feats = amgrad(upd, inp.layout, self.amgrad)  # Alg. 1 line 6
        accepted, info = self._autooptics(feats)  # Alg. 1 line 10 / Alg. 2
        accepted = accepted.to(upd.device)
        k = int(accepted.sum())

        new = g.clone()
        bound = 0.0
        if self.clip == "paper":
            norms = torch.linalg.vector_norm(u_tr.to(torch.float64), dim=1)  # line 12
            if k > 0:
                rho = fedward_clip_bound(norms, k)  # line 13
                clipped = clip_updates(u_tr[accepted], rho, norms[accepted])  # lines 14-17, Eq. 4
                new[train] = g[train] + clipped.mean(dim=0)  # line 18
                bound = float(rho)
        else:
            d = u_tr.shape[1]
            alpha = u_tr.to(torch.float64).abs().sum(dim=1) / max(d, 1)  # ‖Δ_i‖₁ / d
            s = median(alpha)  # over all m
            bound = float(s)
            if k > 0:
                step = torch.sign(u_tr[accepted]) * torch.clamp(alpha[accepted], max=s).to(u_tr.dtype).unsqueeze(1)
                new[train] = g[train] + step.sum(dim=0)
        if k > 0 and bool(buf.any()):
            new[buf] = g[buf] + upd[accepted][:, buf].mean(dim=0)

        info = dict(info)
        info.update(accepted=float(k), clip_bound=bound)
        return Aggregate(new, accepted.cpu(), info)
