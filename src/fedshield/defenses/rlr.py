"""Robust learning rate (Ozdayi, Kantarcioglu, Gel, "Defending against Backdoors in Federated Learning with Robust
Learning Rate", AAAI 2021). The rule (the paper's robust-learning-rate definition; equation numbers not checked [U];
the same rule is in the FLAIN authors' code, docs/defenses.md, RLR [C]):

    η_θ,k = +η  if |Σ_i sgn(Δ_i,k)| ≥ θ,   −η otherwise       (per coordinate k)
    G_t = G_{t−1} + η_θ ⊙ (Σ_i n_i Δ_i / Σ_i n_i)

i.e. coordinates on which fewer than θ more clients agree in sign get the learning rate flipped. sgn(0) = 0.
Only trainable coordinates are considered; batch-norm buffers are the plain mean of all clients, never flipped
(docs/defenses.md, Conventions.3).
"""

from __future__ import annotations

import torch

from ..core.numeric import is_finite_number, is_int, weighted_mean
from .base import Aggregate, Defense, RoundInput, assemble, require
from .registry import register

__all__ = ["RobustLearningRate"]


@register
class RobustLearningRate(Defense):
    """Robust learning rate: flip the server lr on coordinates whose sign agreement |Σ sgn Δ_i| < θ.

    Parameters
    ----------
    threshold:
        θ, an integer (default 4, suited to about 10 clients per round; the FLAIN authors' code uses 6 with 25).
        0 < θ <= n is checked at aggregation time (``ValueError`` naming ``threshold`` and ``n``).
    server_lr:
        η > 0 (default 1.0).
    weighting:
        ``"samples"`` (default, FedAvg weights n_i as in the paper) or ``"uniform"``.

    ``accepted`` is all True (no client is removed; the defense acts per coordinate). ``info["flipped_share"]`` is
    the share of trainable coordinates that got −η.
    """

    name = "rlr"
    summary = "Robust learning rate: per coordinate, flip the server lr's sign where fewer than theta clients agree"
    paper = "Ozdayi, Kantarcioglu, Gel, Defending against Backdoors in Federated Learning with Robust Learning Rate, AAAI 2021"

    def __init__(self, threshold: int = 4, server_lr: float = 1.0, weighting: str = "samples"):
        require(is_int(threshold) and threshold >= 1, "threshold", threshold, "allowed: an integer 1 <= threshold <= n")
        require(is_finite_number(server_lr)
                and server_lr > 0, "server_lr", server_lr, "allowed: a finite number > 0")
        require(weighting in ("samples", "uniform"), "weighting", weighting, "allowed: 'samples', 'uniform'")
        self.threshold = int(threshold)
        self.server_lr = float(server_lr)
        self.weighting = weighting

    def min_clients(self) -> int:
        """At least ``threshold`` clients, or no coordinate could ever reach the agreement threshold."""
        return self.threshold

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        if self.threshold > n:
            raise ValueError(f"rlr: threshold={self.threshold} must satisfy 0 < threshold <= n, but n={n}")
        train = inp.layout.trainable_mask(device=inp.updates.device)
        u_tr = inp.updates[:, train]
        agreement = torch.sign(u_tr).sum(dim=0).abs()
        flip = agreement < self.threshold
        lr = torch.where(flip, -self.server_lr, self.server_lr).to(u_tr.dtype)
        weights = inp.num_samples if self.weighting == "samples" else None
        delta = lr * weighted_mean(u_tr, weights)
        accepted = torch.ones(n, dtype=torch.bool)
        new = assemble(inp, delta, accepted)
        info = {
            "accepted": float(n),
            "threshold": float(self.threshold),
            "flipped_share": float(flip.to(torch.float64).mean()) if flip.numel() else 0.0,
        }
        return Aggregate(new, accepted, info)
