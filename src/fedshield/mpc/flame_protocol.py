"""FLAME's aggregation (Nguyen et al., USENIX Security 2022, Alg. 1 lines 6–13) as the program both servers run.

Input: each server's additive shares U_p (n × d, ring elements carrying ``frac_bits`` = f fractional bits) of
the client updates u_i = W_i − G, with the trainable coordinates first (d_tr of them) and BN buffers after,
and the public encoded global model G (trainable part). Output: each server's share of the new aggregate
Σ_i a_i u_i + noise (scale 2^(32+f)), and the admitted mask if it is to be revealed. Everything in between
stays secret-shared. Per step (names as in the benchmark):

* ``cosine``: one Gram matrix U Uᵀ from a dealer matrix triple (open E = U − M once, n·d words each way; each
  server then computes 1.5 symmetric ring products of n × d matrices);
  <W_i, W_j> follows by public linear terms in G. Each Gram row is normalised by a secret power of four found
  with comparisons, then cos_ij = g_ij ρ_i ρ_j with ρ = 1/√g_ii by Newton's iteration (Alg. 1 line 6, Eq. 2).
* ``clustering``: DBSCAN with min_pts = n//2 + 1 and the binary search for eps of the paper's §8 / App. G,
  exactly as :func:`fedshield.defenses.flame.dbscan_binary_search` defines it, on shared 0/1 matrices:
  neighbourhoods by comparisons, core-core reachability by ⌈log2(n−1)⌉ Boolean squarings, members, sizes, and a
  secure argmax (Alg. 1 line 7).
* ``median``: e_i = ‖u_i‖ from the Gram diagonal (normalise, Newton), then the true median S_t over all n by
  ranking with pairwise comparisons (line 9).
* ``clipping_mean``: γ_i = min(1, S_t/e_i), a_i = mask_i·γ_i/L with 1/L from comparisons against 1..n, and
  Σ a_i u_i reusing the opened E (only n values are opened) (lines 10–11).
* ``noise``: σ = λ·S_t times (z_A + z_B)/√2, where z_A, z_B are standard normal vectors each server draws
  privately, so neither knows the noise (lines 12–13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .party import Party
from .ring import encode, ring_gram, ring_matvec

__all__ = ["FlameParams", "run_flame", "NORM_FRAC", "DIST_FRAC", "COEF_FRAC", "max_sq_norm"]

NORM_FRAC = 28  # fractional bits of normalised values in [1, 4), of 1/sqrt and of the coefficients γ, 1/L
DIST_FRAC = 30  # fractional bits of the cosine distances and of eps
COEF_FRAC = 32  # fractional bits of the aggregation coefficients a_i
MAX_POW4 = 28  # squared norms (raw, 2f fractional bits) must be < 4^(MAX_POW4 + 1) = 2^58
NEWTON_ITERS = 5


def max_sq_norm(frac_bits: int) -> float:
    """Largest squared L2 norm (of an update, or of a local model when clustering on models) allowed."""
    return float(2.0 ** (2 * (MAX_POW4 + 1) - 2 * frac_bits))


@dataclass(frozen=True)
class FlameParams:
    frac_bits: int = 16
    cluster_on: str = "models"
    clustering: bool = True
    clipping: bool = True
    noise: bool = True
    lam: float = 0.001
    search_steps: int = 20
    reveal_admitted: bool = True


@dataclass
class FlameShares:
    out: np.ndarray  # (d,) this server's share of Σ a_i u_i (+ noise), scale 2^(COEF_FRAC + f)
    mask: np.ndarray | None  # (n,) revealed admitted mask (uint8) or None


def _u(values) -> np.ndarray:
    return np.array([int(v) & ((1 << 64) - 1) for v in values], dtype=np.uint64)


def pow4_onehot(P: Party, x: np.ndarray) -> np.ndarray:
    """(n, MAX_POW4+1) shares of h_m = [4^m <= x < 4^(m+1)] for 0 <= x < 4^(MAX_POW4+1); all zero for x = 0."""
    thresholds = _u([4**m for m in range(MAX_POW4 + 1)])
    b = P.add_const(-P.msb(P.add_const(x[:, None] + np.zeros_like(thresholds), -thresholds.view(np.int64))), 1)
    h = b.copy()
    h[:, :-1] -= b[:, 1:]
    return h


def by_bucket(h: np.ndarray, coeffs: list[int]) -> np.ndarray:
    """Σ_m h_m · coeffs[m] (local: the coefficients are public)."""
    return (h * _u(coeffs)).sum(axis=1)


def rsqrt(P: Party, y: np.ndarray) -> np.ndarray:
    """1/√y for y in [1, 4) at NORM_FRAC bits: linear start, then z ← z(3 − y z²)/2."""
    F = NORM_FRAC
    z = P.add_const(-P.trunc(y * np.uint64(round(0.19 * 2**F)), F), round(1.18 * 2**F))
    for _ in range(NEWTON_ITERS):
        z2 = P.mul_trunc(z, z, F)
        yz2 = P.mul_trunc(y, z2, F)
        z = P.mul_trunc(z, P.add_const(-yz2, 3 << F), F + 1)
    return z


def _geq(P: Party, x: np.ndarray, c: int) -> np.ndarray:
    """[x >= c] for a public integer c."""
    return P.add_const(-P.msb(P.add_const(x, -c)), 1)


def cosine_distances(P: Party, gram: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Shares of D_ij = 1 − cos_ij (DIST_FRAC bits; diagonal 0) and the (bucket, y, 1/√y) of the diagonal."""
    n = gram.shape[0]
    h = pow4_onehot(P, np.diagonal(gram).copy())
    pw = by_bucket(h, [2 ** (30 - m) for m in range(MAX_POW4 + 1)])
    q = P.mul(pw[:, None], pw[None, :])  # 2^(60 − m_i − m_j)
    g40 = P.trunc(P.mul(gram, q), 20)  # g_ij = Gram_ij / 2^(m_i + m_j) (raw Gram) in [-4, 4), 40 bits
    y = P.trunc(np.diagonal(g40).copy(), 40 - NORM_FRAC)  # g_ii = raw ‖x_i‖² / 4^m_i in [1, 4)
    rho = rsqrt(P, y)
    rr = P.mul_trunc(rho[:, None], rho[None, :], NORM_FRAC)
    cos = P.mul_trunc(P.trunc(g40, 40 - DIST_FRAC), rr, NORM_FRAC)
    dist = P.add_const(-cos, 1 << DIST_FRAC)
    dist[np.arange(n), np.arange(n)] = 0
    return dist, (h, y, rho)


def dbscan_search(P: Party, dist: np.ndarray, steps: int) -> np.ndarray:
    """Shares of the admitted mask: DBSCAN (min_pts = n//2+1) at the binary-searched eps, largest cluster."""
    n = dist.shape[0]
    min_pts = n // 2 + 1
    unit = np.uint64(1 << (DIST_FRAC + 1 - steps))  # eps(t) = 2t / 2^steps

    def core_at(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eps = t * unit
        nb = P.add_const(-P.msb(eps - dist), 1)  # [D_ij <= eps]
        return nb, _geq(P, nb.sum(axis=1), min_pts)

    t = P.const(np.uint64(1 << steps), (1,))
    for b in reversed(range(steps)):
        cand = P.add_const(t, -(1 << b))
        _, core = core_at(cand)
        found = _geq(P, core.sum(keepdims=True), 1)
        t = t - found * np.uint64(1 << b)
    nb, core = core_at(t)

    cc = P.mul(core[:, None], core[None, :])
    both = P.mul(np.stack([cc, np.broadcast_to(core[:, None], (n, n))]), np.stack([nb, nb]))
    reach, core_nb = both[0], both[1]  # core–core eps-edges (reflexive on cores); rows of N kept for cores
    for _ in range(max(1, math.ceil(math.log2(max(n - 1, 1))))):
        reach = _geq(P, P.matmul(reach, reach), 1)
    members = _geq(P, P.matmul(reach, core_nb), 1)  # M_ik: k is in the cluster of core i
    key = members.sum(axis=1) * np.uint64(2 * n)
    key = P.add_const(key, np.arange(n - 1, -1, -1))  # ties: the smallest index wins
    larger = P.msb(key[:, None] - key[None, :]).sum(axis=1)  # how many keys exceed key_i
    select = P.msb(P.add_const(larger, -1))  # [larger == 0]
    return P.mul(np.broadcast_to(select[:, None], (n, n)), members).sum(axis=0)


def norms(P: Party, sq: np.ndarray, frac_bits: int, bucket=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(e_i = ‖u_i‖ at frac_bits+NORM_FRAC bits, the power-of-four bucket h, 1/√y) from raw squared norms."""
    if bucket is None:
        h = pow4_onehot(P, sq)
        y = P.trunc(P.mul(sq, by_bucket(h, [2 ** (60 - 2 * m) for m in range(MAX_POW4 + 1)])), 60 - NORM_FRAC)
        rho = rsqrt(P, y)
    else:
        h, y, rho = bucket
    sqrt_y = P.mul_trunc(y, rho, NORM_FRAC)
    e = P.mul(sqrt_y, by_bucket(h, [2**m for m in range(MAX_POW4 + 1)]))
    return e, h, rho


def true_median(P: Party, e: np.ndarray) -> np.ndarray:
    """Shares (shape (1,)) of the median of e (mean of the two middle values for even n), via ranks."""
    n = e.shape[0]
    less = np.tril(P.msb(e[:, None] - e[None, :]), -1)  # [e_i < e_j] for j < i
    rank = P.add_const(less.sum(axis=0) - less.sum(axis=1), np.arange(n))  # ties broken by index
    ks = [(n - 1) // 2] if n % 2 else [n // 2 - 1, n // 2]
    args = np.stack([P.add_const(rank, -(k + j)) for k in ks for j in (1, 0)])
    sign = P.msb(args)
    select = sum(sign[2 * i] - sign[2 * i + 1] for i in range(len(ks)))  # [rank == k]
    s = P.mul(select, e).sum(keepdims=True)
    return s if n % 2 else P.trunc(s, 1)


def run_flame(
    P: Party,
    U: np.ndarray,
    g_tr: np.ndarray,
    d_tr: int,
    prm: FlameParams,
    own_normal: np.ndarray | None,
    step: Callable[[str], None],
) -> FlameShares:
    """The whole round for one server. ``U`` is this server's (n, d) share matrix, ``g_tr`` the public encoded
    trainable part of G, ``own_normal`` this server's private N(0, 1) vector of length d_tr (noise on)."""
    n, d = U.shape
    f = prm.frac_bits
    se = f + NORM_FRAC  # fractional bits of the norms e_i and of S_t
    corr = P.corr.get("gram", n=n, d=d, d_tr=d_tr)
    mask_m = corr["mask"]

    step("cosine")
    v = ring_matvec(U[:, :d_tr], g_tr) if prm.cluster_on == "models" else None
    U -= mask_m
    E = P.open(U, "gram_e")  # U − M, public; hides U because M is uniform
    del U
    # Gram = E Eᵀ + E Mᵀ + M Eᵀ + M Mᵀ with M = M_A + M_B; server p holds (E + M_p)(E + M_p)ᵀ minus its half (by
    # column chunks) of the public E Eᵀ, plus the dealer's share of the cross term M_A M_Bᵀ + M_B M_Aᵀ.
    x = E[:, :d_tr] + mask_m[:, :d_tr]
    gram_u = ring_gram(x) - ring_gram(E[:, :d_tr], part=(0 if P.is_a else 1, 2)) + corr["cross"]
    del x
    if v is not None:
        gg = np.uint64(int((g_tr.view(np.int64) @ g_tr.view(np.int64))) & ((1 << 64) - 1))
        gram_c = P.add_const(gram_u + v[:, None] + v[None, :], gg.view(np.int64))
    else:
        gram_c = gram_u
    if prm.clustering:
        dist, bucket_c = cosine_distances(P, gram_c)
        step("clustering")
        mask = dbscan_search(P, dist, prm.search_steps)
    else:
        bucket_c = None
        mask = P.const(np.uint64(1), (n,))

    step("median")
    reuse = bucket_c if prm.cluster_on == "updates" else None
    e, h, rho = norms(P, np.diagonal(gram_u).copy(), f, reuse)
    need_bound = prm.clipping or (prm.noise and prm.lam > 0)
    s_t = true_median(P, e) if need_bound else None

    step("clipping_mean")
    if prm.clipping:
        inside = P.add_const(-P.msb(s_t - e), 1)  # [e_i <= S_t]
        w = P.mul(np.broadcast_to(s_t, (n,)), by_bucket(h, [2 ** (29 - m) for m in range(MAX_POW4 + 1)]))
        ratio = P.mul_trunc(P.trunc(w, 29), rho, NORM_FRAC)  # S_t / e_i where e_i > S_t
        gamma = ratio + P.mul(inside, P.add_const(-ratio, 1 << NORM_FRAC))
    else:
        gamma = P.const(np.uint64(1 << NORM_FRAC), (n,))
    count = mask.sum(keepdims=True)
    ge = P.add_const(-P.msb(P.add_const(np.broadcast_to(count, (n,)), -np.arange(1, n + 1))), 1)  # [L >= k]
    onehot = ge.copy()
    onehot[:-1] -= ge[1:]
    inv_count = (onehot * _u([round(2**NORM_FRAC / k) for k in range(1, n + 1)])).sum(keepdims=True)
    mg = P.mul(np.stack([mask, mask]), np.stack([gamma, np.broadcast_to(inv_count, (n,))]))
    a = P.trunc(P.mul(mg[0], np.broadcast_to(inv_count, (n,))), 2 * NORM_FRAC - COEF_FRAC)
    b = mg[1] * np.uint64(1 << (COEF_FRAC - NORM_FRAC))
    coef = np.stack([a, b])
    delta = P.open(coef - corr["alpha"], "coef")
    out = np.empty(d, dtype=np.uint64)
    for row, cols in ((0, slice(0, d_tr)), (1, slice(d_tr, d))):
        if cols.stop > cols.start:
            out[cols] = (ring_matvec(coef[row : row + 1], E[:, cols]) + ring_matvec(delta[row : row + 1], mask_m[:, cols]))[0]
            out[cols] += corr["alpha_mask"][row, cols]

    step("noise")
    if prm.noise and prm.lam > 0:
        lam_bits = 19 - math.floor(math.log2(prm.lam))
        lam_fix = np.uint64(round(prm.lam * 2**lam_bits))
        s28 = P.trunc(s_t, se - NORM_FRAC)
        sigma = P.trunc(s28 * lam_fix, NORM_FRAC + lam_bits - COEF_FRAC)  # σ = λ S_t, COEF_FRAC bits
        z = encode(np.asarray(own_normal, dtype=np.float64) / math.sqrt(2.0), f)
        out[:d_tr] += P.scalar_vec(sigma, z)

    revealed = None
    if prm.reveal_admitted:
        revealed = P.open(mask, "mask").view(np.int64).astype(np.uint8)
    return FlameShares(out, revealed)
