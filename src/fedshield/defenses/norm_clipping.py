"""Norm clipping and weak differential privacy (Sun, Kairouz, Suresh, McMahan, "Can You Really Backdoor Federated
Learning?", arXiv 1911.07963, 2019; docs/defenses.md, NormClipping).

* Norm clipping: every update is scaled to norm at most M,
  Δ_k ← Δ_k / max(1, ‖Δ_k‖₂ / M), then the usual FedAvg: G ← G + η Σ_k n_k Δ_k / Σ_k n_k.
* Weak DP: additionally add Gaussian noise to every trainable coordinate of the aggregate.
  **Inconsistency inside the paper** (docs/defenses.md, NormClipping): the text says "Gaussian noise with *variance* 0.025",
  Fig. 4's legend says "σ = 0.025". We take ``noise_std`` as the standard deviation σ, as the edge-case authors'
  code does (weak DP there: norm bound 2, stddev 0.025).

Norms are taken over trainable coordinates only; batch-norm buffers are neither clipped nor noised and are the
plain mean of all clients (docs/defenses.md, Conventions.3).
"""

from __future__ import annotations

import torch

from ..core.numeric import clip_updates, is_finite_number, weighted_mean
from .base import Aggregate, Defense, RoundInput, assemble, require
from .registry import register

__all__ = ["NormClipping", "WeakDP"]


@register
class NormClipping(Defense):
    """Clip each update to L2 norm ``norm_bound`` (M), FedAvg, optional Gaussian noise (Sun et al. 2019).

    Parameters
    ----------
    norm_bound:
        M > 0 (default 3.0: the bound that mitigated the attack on EMNIST in the paper; the right value depends on
        the model and the size of benign updates).
    noise_std:
        standard deviation σ >= 0 of the Gaussian noise added once to every trainable coordinate of the new global
        model (default 0.0: clipping only). See the module docstring for the paper's variance-vs-σ ambiguity.
    weighting:
        ``"samples"`` (default, FedAvg weights n_k) or ``"uniform"``.
    server_lr:
        η (default 1.0) scaling the averaged clipped update (noise is added after the scaling).

    ``accepted`` is all True (every clipped update enters the average). ``info``: bound, noise std, number of
    clipped updates, max norm before clipping.
    """

    name = "norm_clipping"
    summary = "Clip every update to L2 norm M, then FedAvg; optional Gaussian noise on the aggregate (weak DP)"
    paper = "Sun, Kairouz, Suresh, McMahan, Can You Really Backdoor Federated Learning?, arXiv 1911.07963, 2019"

    def __init__(self, norm_bound: float = 3.0, noise_std: float = 0.0, weighting: str = "samples",
                 server_lr: float = 1.0):
        require(is_finite_number(norm_bound) and norm_bound > 0, "norm_bound", norm_bound, "allowed: a finite number > 0")
        require(is_finite_number(noise_std) and noise_std >= 0, "noise_std", noise_std, "allowed: a finite number >= 0")
        require(weighting in ("samples", "uniform"), "weighting", weighting, "allowed: 'samples', 'uniform'")
        require(is_finite_number(server_lr) and server_lr > 0, "server_lr", server_lr, "allowed: a finite number > 0")
        self.norm_bound = float(norm_bound)
        self.noise_std = float(noise_std)
        self.weighting = weighting
        self.server_lr = float(server_lr)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        train = inp.layout.trainable_mask(device=inp.updates.device)
        u_tr = inp.updates[:, train]
        norms = torch.linalg.vector_norm(u_tr.to(torch.float64), dim=1)
        clipped = clip_updates(u_tr, self.norm_bound, norms)  # Δ · min(1, M/‖Δ‖) = Δ / max(1, ‖Δ‖/M)
        weights = inp.num_samples if self.weighting == "samples" else None
        delta = weighted_mean(clipped, weights)
        accepted = torch.ones(n, dtype=torch.bool)
        new = assemble(inp, delta, accepted, scale=self.server_lr)
        if self.noise_std > 0:
            gen = inp.generator
            tr = train.to(new.device)
            z = torch.randn(int(tr.sum()), generator=gen, device=gen.device, dtype=new.dtype)
            new[tr] = new[tr] + (self.noise_std * z).to(device=new.device, dtype=new.dtype)
        info = {
            "accepted": float(n),
            "norm_bound": self.norm_bound,
            "noise_std": self.noise_std,
            "clipped": float((norms > self.norm_bound).sum()),
            "max_norm": float(norms.max()),
        }
        return Aggregate(new, accepted, info)


@register
class WeakDP(NormClipping):
    """Weak DP (Sun et al. 2019): norm clipping plus Gaussian noise, with the edge-case authors' code defaults
    ``norm_bound=2.0`` and ``noise_std=0.025`` (σ, not variance; see the module docstring). Same parameters as
    ``norm_clipping``."""

    name = "weak_dp"
    summary = "Norm clipping (M=2) plus Gaussian noise of std 0.025 on every trainable coordinate of the aggregate"

    def __init__(self, norm_bound: float = 2.0, noise_std: float = 0.025, weighting: str = "samples",
                 server_lr: float = 1.0):
        super().__init__(norm_bound=norm_bound, noise_std=noise_std, weighting=weighting, server_lr=server_lr)
