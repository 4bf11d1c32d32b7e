"""Numeric helpers shared by defenses, attacks and the simulator: value checks, distances, the median,
clipping by norm, 1-D two-means, weighted means, Krum scores and assembling a new global model.

Everything works on the (n × d) update matrix at once (one matmul for all pairwise distances).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "is_number",
    "is_finite_number",
    "is_int",
    "is_bool",
    "cosine_distances",
    "pairwise_sq_distances",
    "median",
    "clip_updates",
    "two_means_1d",
    "weighted_mean",
    "krum_scores",
    "krum_select",
    "assemble_global",
]


# ------------------------------------------------------------------------------------------ value checks


def is_number(x: object) -> bool:
    """A Python int or float that is not a bool (NaN and ±Inf included: use :func:`is_finite_number` to refuse
    them)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_finite_number(x: object) -> bool:
    """A Python int or float that is not a bool, NaN or ±Inf."""
    return is_number(x) and math.isfinite(x)  # type: ignore[arg-type]


def is_int(x: object) -> bool:
    """A Python or NumPy integer that is not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def is_bool(x: object) -> bool:
    """Exactly ``True`` or ``False`` (not 0/1, not a string)."""
    return isinstance(x, bool)


# ------------------------------------------------------------------------------------------ distances


def cosine_distances(x: Tensor) -> Tensor:
    """(n, n) float64 pairwise cosine distances 1 − cos(x_i, x_j) of the rows of ``x`` (FLAME Eq. 2).

    One matmul on the row-normalised matrix. A zero row has cosine similarity 0 with every other row (distance 1)
    and distance 0 to itself. Values are clamped to [0, 2] and the diagonal is exactly 0, so the matrix is a valid
    precomputed metric input for HDBSCAN.
    """
    x = x.to(torch.float64)
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    unit = x / norms.clamp_min(torch.finfo(torch.float64).tiny)
    sim = unit @ unit.T
    dist = (1.0 - sim).clamp_(0.0, 2.0)
    dist = 0.5 * (dist + dist.T)
    dist.fill_diagonal_(0.0)
    return dist


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


# ------------------------------------------------------------------------------------------ statistics


def median(values: Tensor, dim: Optional[int] = None) -> Tensor:
    """The median as numpy defines it: the middle value, or the mean of the two middle values for an even count.

    ``dim=None``: of all entries (a 0-d tensor); otherwise along ``dim`` (per column for ``dim=0``).
    ``torch.median`` returns the lower of the two middle values; the papers say "median", so we use the usual one.
    """
    if dim is None:
        values, dim = values.reshape(-1), 0
    k = values.shape[dim]
    if k == 0:
        raise ValueError("median of an empty set")
    srt = torch.sort(values, dim=dim).values
    if k % 2 == 1:
        return srt.select(dim, k // 2).clone()
    return 0.5 * (srt.select(dim, k // 2 - 1) + srt.select(dim, k // 2))


def weighted_mean(updates: Tensor, weights: Tensor | None = None) -> Tensor:
    """Σ_i w_i Δ_i / Σ_i w_i over the rows of ``updates`` (plain mean when ``weights`` is None).

    Written as a broadcast product and a sum over rows rather than a matrix-vector product: the result then
    does not depend on the number of threads (a threaded GEMV reduces in a different order).
    """
    if weights is None:
        return updates.mean(dim=0)
    w = weights.to(updates.dtype)
    total = w.sum()
    if not bool(total > 0):
        raise ValueError(f"aggregation weights must have a positive sum, got {w.tolist()}")
    return (updates * (w / total).unsqueeze(1)).sum(dim=0)


def two_means_1d(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Exact 2-means of each column of ``x`` (n, c), n >= 2: the split of the sorted column that minimises the
    within-cluster sum of squares (equivalently maximises S_l²/s + S_r²/(n−s)); ties go to the smallest split.

    Returns (stable sorted order (n, c) of row indices, split size s (c,) = size of the lower cluster in 1..n−1,
    centre distance (c,) = mean of the upper cluster − mean of the lower cluster, float64).
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"two-means needs at least 2 values, got {n}")
    srt, order = torch.sort(x.to(torch.float64), dim=0, stable=True)
    csum = torch.cumsum(srt, dim=0)
    total = csum[-1]
    left = csum[:-1]  # (n−1, c): S_s for s = 1..n−1
    s = torch.arange(1, n, dtype=torch.float64, device=x.device).unsqueeze(1)
    between = left * left / s + (total - left) ** 2 / (n - s)
    best = torch.argmax(between, dim=0)  # first maximum → smallest s
    split = best + 1
    left_sum = torch.gather(left, 0, best.unsqueeze(0)).squeeze(0)
    sf = split.to(torch.float64)
    gap = (total - left_sum) / (n - sf) - left_sum / sf
    return order, split, gap


# ------------------------------------------------------------------------------------------ clipping


def clip_updates(updates: Tensor, bound: Tensor | float, norms: Tensor | None = None) -> Tensor:
    """Δ_i · min(1, S / e_i) for every row (FLAME Alg. 1 line 10); rows with e_i = 0 are left as they are.

    ``norms`` defaults to the L2 norms of the rows.
    """
    if norms is None:
        norms = torch.linalg.vector_norm(updates, dim=1)
    bound_t = torch.as_tensor(bound, dtype=norms.dtype, device=norms.device)
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    gamma = torch.where(norms > 0, torch.clamp(bound_t / safe, max=1.0), torch.ones_like(norms))
    return updates * gamma.to(updates.dtype).unsqueeze(1)


# ------------------------------------------------------------------------------------------ Krum


def krum_scores(d2: Tensor, num_neighbours: int, squared: bool = True) -> Tensor:
    """s(i) = sum of the ``num_neighbours`` smallest distances from i to the others (i excluded); Blanchard et
    al. 2017. ``d2`` holds squared distances; with ``squared=False`` their square roots are summed instead.
    Returns float64 (n,).
    """
    n = d2.shape[0]
    dist = d2 if squared else d2.sqrt()
    if num_neighbours <= 0 or n <= 1:
        return torch.zeros(n, dtype=torch.float64, device=d2.device)
    off = dist.clone()
    off.fill_diagonal_(float("inf"))
    closest = torch.sort(off, dim=1).values[:, :num_neighbours]
    return closest.sum(dim=1)


def krum_select(updates: Tensor, f: int) -> int:
    """The row Krum picks among ``updates`` (n, d) tolerating ``f`` Byzantine rows: the lowest score over the
    n − f − 2 nearest rows (squared distances); ties go to the smallest index. Needs 2f + 2 < n."""
    n = updates.shape[0]
    if not 2 * f + 2 < n:
        raise ValueError(f"Krum with f={f} needs 2f + 2 < n, i.e. n >= {2 * f + 3} rows, got n={n}")
    scores = krum_scores(pairwise_sq_distances(updates), n - f - 2)
    return int(torch.sort(scores, stable=True).indices[0])


# ------------------------------------------------------------------------------------------ assembling


def assemble_global(global_params: Tensor, updates: Tensor, trainable: Tensor, train_delta: Tensor | None,
                    admitted: Tensor, scale: float = 1.0) -> Tensor:
    """G + scale · ``train_delta`` on the ``trainable`` coordinates; the others (batch-norm buffers): G + the
    plain mean of the ``admitted`` rows of ``updates``.

    ``train_delta`` is the aggregated update restricted to trainable coordinates (``None`` → no change). When no
    client is admitted the buffers keep their previous values.
    """
    g = global_params
    train = trainable.to(g.device)
    new = g.clone()
    if train_delta is not None:
        new[train] = g[train] + scale * train_delta.to(dtype=g.dtype, device=g.device)
    buf = ~train
    admitted = admitted.to(g.device)
    if bool(buf.any()) and bool(admitted.any()):
        new[buf] = g[buf] + updates[admitted][:, buf].mean(dim=0)
    return new
