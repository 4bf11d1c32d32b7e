"""Numeric helpers shared by defenses, attacks and the simulator: value checks, distances, the median,
clipping by norm, 1-D two-means, weighted means, Krum scores and assembling a new global model.

Everything works on the (n × d) update matrix at once (one matmul for all pairwise distances).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from scipy.linalg.blas import get_blas_funcs
from threadpoolctl import threadpool_limits
from torch import Tensor

__all__ = [
    "finite_rows",
    "is_number",
    "is_finite_number",
    "is_int",
    "is_bool",
    "row_norms",
    "gram",
    "cosine_distances",
    "pairwise_sq_distances",
    "median",
    "mean_rows",
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


# Row norms within which float32 products of rows neither overflow (‖x_i‖‖x_j‖ ≤ 1e24) nor lose a row's mass to
# underflow; outside it the float64 route is taken.
FLOAT32_SAFE_NORMS = (1e-12, 1e12)


def row_norms(x: Tensor) -> Tensor:
    """(n,) float64 L2 norms of the rows of ``x`` from one pass in ``x``'s dtype, without an (n, d) float64 copy.

    A float32 norm overflows to Inf for huge finite rows and underflows for tiny ones; rows whose norm falls
    outside :data:`FLOAT32_SAFE_NORMS` (zero rows included) are recomputed in float64, so the result equals the
    float64 norm to float32 precision.
    """
    norms = torch.linalg.vector_norm(x, dim=1).to(torch.float64)
    if x.dtype != torch.float64:
        lo, hi = FLOAT32_SAFE_NORMS
        redo = ~((norms >= lo) & (norms <= hi))
        if bool(redo.any()):
            norms[redo] = torch.linalg.vector_norm(x[redo].to(torch.float64), dim=1)
    return norms


def gram(x: Tensor) -> Tensor:
    """(n, n) Gram matrix x·xᵀ of the rows of ``x``, in ``x``'s dtype (float32 or float64).

    On the CPU only the upper triangle is computed (BLAS ``syrk``, half the multiply-adds of a matmul, on the
    threads torch uses) and mirrored; elsewhere one matmul.
    """
    if x.device.type != "cpu":
        return x @ x.T
    a = x.contiguous().numpy()
    syrk = get_blas_funcs("syrk", dtype=a.dtype)
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        upper = syrk(1.0, a.T, trans=1, lower=0)  # a.T is Fortran-ordered (d, n): no copy; gives (aᵀ)ᵀaᵀ = a·aᵀ
    g = torch.from_numpy(np.triu(upper))
    return g + torch.triu(g, 1).T


def finite_rows(x: Tensor) -> Tensor:
    """(n,) bool: which rows of the (n, d) matrix ``x`` hold no NaN/Inf. Exact, in one reduction pass: a row whose
    sum is finite has only finite entries (an Inf or NaN anywhere makes the sum Inf or NaN); rows whose sum is not
    finite (a NaN/Inf, or finite values whose sum overflows) are then checked entry by entry. About 20× faster than
    ``torch.isfinite(x).all(dim=1)`` on a 1000 × 431,080 matrix, which materialises an n × d boolean tensor."""
    ok = torch.isfinite(x.sum(dim=1))
    if not bool(ok.all()):
        idx = torch.nonzero(~ok).flatten()
        ok[idx] = torch.isfinite(x[idx]).all(dim=1)
    return ok


def cosine_distances(x: Tensor, origin: Optional[Tensor] = None, gram_dtype: torch.dtype = torch.float64) -> Tensor:
    """(n, n) float64 pairwise cosine distances 1 − cos(W_i, W_j) of the points W_i = origin + x_i (FLAME Eq. 2;
    ``origin=None`` means 0, the distances of the rows of ``x`` themselves).

    The W_i are never formed: with a_i = <x_i, origin> and Γ = x·xᵀ, <W_i, W_j> = ‖origin‖² + a_i + a_j + Γ_ij
    and ‖W_i‖² = ‖origin‖² + 2a_i + Γ_ii. Γ, the one O(n²d) term, is a symmetric rank-d product (:func:`gram`)
    in ``gram_dtype``; a_i and ‖origin‖² are O(nd) products in the same dtype, and the terms are combined in
    float64, where the cancellation in 1 − cos happens. ``gram_dtype=torch.float32`` halves the work again; for
    FLAME's full-model cosines (all close to 1, as ‖x_i‖ ≪ ‖origin‖) it keeps the distances to float32 precision
    *relative to the distances* (about 5e-6 on lenet-sized inputs, tests/test_flame_distances.py), which a
    float32 matmul of the W_i would not.

    A zero point has distance 1 to every other point and 0 to itself. Values are clamped to [0, 2], the matrix is
    symmetric and its diagonal exactly 0, so it is a valid precomputed metric input for HDBSCAN. With a float32
    Gram, inputs whose nonzero rows (or ``origin``) fall outside :data:`FLOAT32_SAFE_NORMS` take the float64 route.
    """
    if gram_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"gram_dtype={gram_dtype} is invalid; allowed: torch.float32, torch.float64")
    if gram_dtype == torch.float32 and not _float32_safe(x, origin):
        gram_dtype = torch.float64  # huge or tiny rows: float32 products would overflow or underflow
    xs = x.to(gram_dtype)
    gamma = gram(xs).to(torch.float64)
    sq = torch.diagonal(gamma).clone()
    if origin is None:
        a = torch.zeros(len(sq), dtype=torch.float64, device=gamma.device)
        oo = torch.zeros((), dtype=torch.float64, device=gamma.device)
    else:
        o = origin.to(device=xs.device, dtype=gram_dtype)
        a = torch.mv(xs, o).to(device=gamma.device, dtype=torch.float64)
        oo = torch.dot(o, o).to(device=gamma.device, dtype=torch.float64)
    dots = gamma + a.unsqueeze(0) + a.unsqueeze(1) + oo
    norms = torch.sqrt((oo + 2 * a + sq).clamp_min(0.0))
    denom = (norms.unsqueeze(0) * norms.unsqueeze(1)).clamp_min(torch.finfo(torch.float64).tiny)
    dist = (1.0 - dots / denom).clamp_(0.0, 2.0)
    zero = norms == 0
    dist[zero] = 1.0
    dist[:, zero] = 1.0
    dist = 0.5 * (dist + dist.T)
    dist.fill_diagonal_(0.0)
    return dist


def _float32_safe(x: Tensor, origin: Optional[Tensor]) -> bool:
    """Whether every nonzero row of ``x``, and ``origin``, has a norm inside :data:`FLOAT32_SAFE_NORMS`."""
    lo, hi = FLOAT32_SAFE_NORMS
    norms = row_norms(x)
    if origin is not None:
        norms = torch.cat([norms, row_norms(origin.reshape(1, -1)).to(norms.device)])
    nonzero = norms[norms > 0]
    return bool(((nonzero >= lo) & (nonzero <= hi)).all())


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
    # (a + b) / 2 written as 0.5a + 0.5b: the same value, without a + b overflowing to Inf for huge finite a, b
    return 0.5 * srt.select(dim, k // 2 - 1) + 0.5 * srt.select(dim, k // 2)


def mean_rows(x: Tensor) -> Tensor:
    """Column means of ``x`` (n, d) that do not overflow: a float32 sum of huge finite values can reach Inf
    although their mean is finite; then the mean is recomputed in float64 (the result is unchanged otherwise)."""
    m = x.mean(dim=0)
    if x.dtype == torch.float64 or bool(torch.isfinite(m).all()) or not bool(torch.isfinite(x).all()):
        return m
    return x.to(torch.float64).mean(dim=0).to(x.dtype)


def weighted_mean(updates: Tensor, weights: Tensor | None = None) -> Tensor:
    """Σ_i w_i Δ_i / Σ_i w_i over the rows of ``updates`` (plain mean when ``weights`` is None).

    Written as a broadcast product and a sum over rows rather than a matrix-vector product: the result then
    does not depend on the number of threads (a threaded GEMV reduces in a different order). Weights must be
    finite, >= 0 and have a positive sum (``ValueError`` otherwise). Huge finite updates do not overflow to Inf:
    like :func:`mean_rows`, a float32 result that overflowed is recomputed in float64.
    """
    if weights is None:
        return mean_rows(updates)
    w = weights.to(updates.dtype)
    total = w.sum()
    if not bool(torch.isfinite(w).all()) or not bool((w >= 0).all()) or not bool(total > 0):
        raise ValueError(f"aggregation weights must be finite, >= 0 and have a positive sum, got {w.tolist()}")
    out = (updates * (w / total).unsqueeze(1)).sum(dim=0)
    if updates.dtype != torch.float64 and not bool(torch.isfinite(out).all()) and bool(torch.isfinite(updates).all()):
        w64 = weights.to(torch.float64)
        out = (updates.to(torch.float64) * (w64 / w64.sum()).unsqueeze(1)).sum(dim=0).to(updates.dtype)
    return out


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
        new[buf] = g[buf] + mean_rows(updates[admitted][:, buf])
    return new
