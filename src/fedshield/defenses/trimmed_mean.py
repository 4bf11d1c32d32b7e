"""Coordinate-wise trimmed mean (Yin et al., ICML 2018, Definition 2; docs/defenses.md, TrimmedMean).

For every coordinate the k largest and the k smallest of the n values are dropped and the remaining n − 2k are
averaged. k is given either as a fraction ``beta`` ∈ [0, ½) of n, with k = ⌊β·n⌋ (Yin et al.'s β-trimmed mean;
the rounding is not stated in the paper, we round down [U]), or directly as a count ``trim`` (Fang et al. 2020 /
FLTrust, where "β" is the number of attackers c). 2k < n is required.

Only trainable coordinates are trimmed; batch-norm buffers are the plain mean of all clients (docs/defenses.md, Conventions.3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.numeric import is_finite_number, is_int, mean_rows
from .base import Aggregate, Defense, ParameterError, RoundInput, assemble, require
from .registry import register

__all__ = ["TrimmedMean", "trimmed_mean"]


def trimmed_mean(x: Tensor, k: int) -> Tensor:
    """Per-column mean of ``x`` (n, d) after dropping the ``k`` largest and ``k`` smallest values."""
    n = x.shape[0]
    if not 0 <= 2 * k < n:
        raise ValueError(f"trimmed mean: dropping k={k} from each side needs 2k < n, got n={n}")
    if k == 0:
        return mean_rows(x)
    return mean_rows(torch.sort(x, dim=0).values[k : n - k])


@register
class TrimmedMean(Defense):
    """Coordinate-wise β-trimmed mean (Yin et al. 2018, Def. 2).

    Parameters
    ----------
    beta:
        fraction trimmed from each side, 0 <= beta < 0.5; k = floor(beta · n). Default 0.1 (the Fedward authors'
        code) when neither ``beta`` nor ``trim`` is given.
    trim:
        number of values trimmed from each side (Fang et al. / FLTrust: the number of attackers). Give ``beta`` or
        ``trim``, not both. 2·trim >= n raises a ``ValueError`` naming ``trim`` and ``n`` at aggregation time.
    server_lr:
        scales the aggregated update (default 1.0).

    ``accepted`` is all True: every update takes part; which values are trimmed differs per coordinate.
    """

    name = "trimmed_mean"
    summary = "Coordinate-wise mean after dropping the k largest and k smallest values (k = floor(beta*n) or trim)"
    paper = "Yin et al., Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates, ICML 2018"

    def __init__(self, beta: float | None = None, trim: int | None = None, server_lr: float = 1.0):
        if beta is not None and trim is not None:
            raise ParameterError(
                f"beta={beta!r} is invalid together with trim={trim!r}; give either beta (a fraction) or trim "
                "(a count), not both"
            )
        if beta is None and trim is None:
            beta = 0.1
        if beta is not None:
            require(is_finite_number(beta)
                    and 0 <= beta < 0.5, "beta", beta, "allowed: a fraction 0 <= beta < 0.5")
            beta = float(beta)
        if trim is not None:
            require(is_int(trim) and trim >= 0, "trim", trim, "allowed: an integer >= 0 with 2*trim < n")
        require(is_finite_number(server_lr) and server_lr > 0, "server_lr", server_lr, "allowed: a finite number > 0")
        self.beta = beta
        self.trim = trim
        self.server_lr = float(server_lr)

    def _k_for(self, n: int) -> int:
        if self.trim is not None:
            if 2 * self.trim >= n:
                raise ValueError(f"trimmed_mean: trim={self.trim} needs 2*trim < n, but this round has n={n}")
            return self.trim
        k = int(math.floor(self.beta * n + 1e-9))  # 1e-9 guards against e.g. 0.3*10 = 2.9999...
        return min(k, (n - 1) // 2)  # beta < 0.5 implies 2k < n; keep it so despite the guard

    def min_clients(self) -> int:
        """A fixed ``trim`` needs 2·trim < n; with ``beta`` k shrinks with n, so any n works."""
        return 1 if self.trim is None else 2 * self.trim + 1

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        k = self._k_for(n)
        train = inp.layout.trainable_mask(device=inp.updates.device)
        delta = trimmed_mean(inp.updates[:, train], k)
        accepted = torch.ones(n, dtype=torch.bool)
        new = assemble(inp, delta, accepted, scale=self.server_lr)
        return Aggregate(new, accepted, {"accepted": float(n), "trimmed_per_side": float(k)})
