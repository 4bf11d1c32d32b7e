"""Coordinate-wise median (Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", ICML 2018; docs/defenses.md, Median): g_k = med{Δ^i_k : i = 1..n} for every coordinate k.

For even n the median is the mean of the two middle values (the usual definition, as numpy; ``torch.median``
would return the lower one). Only trainable coordinates take the median; batch-norm buffers are the plain mean of
all clients (docs/defenses.md, Conventions.3).
"""

from __future__ import annotations

import torch

from ..core.numeric import is_number, median
from .base import Aggregate, Defense, RoundInput, assemble, require
from .registry import register

__all__ = ["CoordinateMedian"]


@register
class CoordinateMedian(Defense):
    """Coordinate-wise median of the updates (Yin et al. 2018, Definition 1 / Alg. 1 option I).

    ``accepted`` is all True: every update takes part in every coordinate's median (no client is singled out).
    ``server_lr`` (default 1.0) scales the aggregated update.
    """

    name = "median"
    summary = "Coordinate-wise median of the updates (mean of the two middle values for even n)"
    paper = "Yin et al., Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates, ICML 2018"

    def __init__(self, server_lr: float = 1.0):
        require(is_number(server_lr) and server_lr > 0,
                "server_lr", server_lr, "must be a number > 0")
        self.server_lr = float(server_lr)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        train = inp.layout.trainable_mask(device=inp.updates.device)
        delta = median(inp.updates[:, train], dim=0)
        accepted = torch.ones(inp.n, dtype=torch.bool)
        new = assemble(inp, delta, accepted, scale=self.server_lr)
        return Aggregate(new, accepted, {"accepted": float(inp.n)})
