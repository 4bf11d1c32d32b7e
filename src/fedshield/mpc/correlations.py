"""Correlated randomness from a trusted dealer, one kind per function triple.

Every kind is defined by three pure functions of PRG streams:

* ``share_a(prg_a, **p)``: server A's whole share, drawn from A's seed (the dealer sends A only that seed);
* ``random_b(prg_b, **p)``: the uniformly random part of server B's share, drawn from B's seed;
* ``correction(sa, rb, **p)``: the rest of B's share, which the dealer computes and sends to B.

The dealer calls all three; A calls only ``share_a`` and B only ``random_b`` plus the correction it receives, in
the same order, so every stream stays in step. Each server's share alone is uniform (every component is either
PRG output or a secret minus PRG output), so a server learns nothing from it.

Kinds: ``mul`` (Beaver triple, elementwise), ``matmul`` (matrix Beaver triple), ``cmp`` (a random r with
arithmetic and packed XOR-bit shares, r >> shift, boolean AND triples for the carry circuit and a daBit),
``gram`` (the mask matrix, the cross term of its Gram matrix and the mask of the weighted sum) and ``svec``
(scalar × vector triple).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .prg import PRG
from .ring import ring_matmul_nt, ring_matvec

__all__ = ["KINDS", "AND_ROUNDS", "AND_WORDS", "assemble_b"]

Shares = dict[str, np.ndarray]

AND_ROUNDS = 6  # Kogge–Stone prefix over 64 bit positions: shifts 1, 2, 4, 8, 16, 32
AND_WORDS = 2 * (AND_ROUNDS - 1) + 1  # two ANDs per round, one in the last


# ------------------------------------------------------------------------------------------------ mul


def _mul_a(prg: PRG, shape: list[int]) -> Shares:
    return {"a": prg.u64(tuple(shape)), "b": prg.u64(tuple(shape)), "c": prg.u64(tuple(shape))}


def _mul_b(prg: PRG, shape: list[int]) -> Shares:
    return {"a": prg.u64(tuple(shape)), "b": prg.u64(tuple(shape))}


def _mul_corr(sa: Shares, rb: Shares, shape: list[int]) -> Shares:
    return {"c": (sa["a"] + rb["a"]) * (sa["b"] + rb["b"]) - sa["c"]}


# ------------------------------------------------------------------------------------------------ matmul


def _mm_a(prg: PRG, n: int, k: int, m: int) -> Shares:
    return {"x": prg.u64((n, k)), "y": prg.u64((k, m)), "z": prg.u64((n, m))}


def _mm_b(prg: PRG, n: int, k: int, m: int) -> Shares:
    return {"x": prg.u64((n, k)), "y": prg.u64((k, m))}


def _mm_corr(sa: Shares, rb: Shares, n: int, k: int, m: int) -> Shares:
    x, y = sa["x"] + rb["x"], sa["y"] + rb["y"]
    return {"z": ring_matvec(x, y) - sa["z"]}


# ------------------------------------------------------------------------------------------------ cmp


def _cmp_a(prg: PRG, n: int, shift: int) -> Shares:
    out = {"r": prg.u64(n), "rb": prg.u64(n)}
    if shift:
        out["rs"] = prg.u64(n)
    out.update(ta=prg.u64((AND_WORDS, n)), tb=prg.u64((AND_WORDS, n)), tc=prg.u64((AND_WORDS, n)))
    out.update(px=prg.bits(n), pa=prg.u64(n))
    return out


def _cmp_b(prg: PRG, n: int, shift: int) -> Shares:
    return {"r": prg.u64(n), "ta": prg.u64((AND_WORDS, n)), "tb": prg.u64((AND_WORDS, n)), "px": prg.bits(n)}


def _cmp_corr(sa: Shares, rb: Shares, n: int, shift: int) -> Shares:
    r = sa["r"] + rb["r"]
    out = {"rb": r ^ sa["rb"]}
    if shift:
        out["rs"] = (r >> np.uint64(shift)) - sa["rs"]
    out["tc"] = ((sa["ta"] ^ rb["ta"]) & (sa["tb"] ^ rb["tb"])) ^ sa["tc"]
    out["pa"] = (sa["px"] ^ rb["px"]) - sa["pa"]
    return out


# ------------------------------------------------------------------------------------------------ gram


def _gram_a(prg: PRG, n: int, d: int, d_tr: int) -> Shares:
    return {"mask": prg.u64((n, d)), "cross": prg.u64((n, n)), "alpha": prg.u64((2, n)), "alpha_mask": prg.u64((2, d))}


def _gram_b(prg: PRG, n: int, d: int, d_tr: int) -> Shares:
    return {"mask": prg.u64((n, d)), "alpha": prg.u64((2, n))}


def _gram_corr(sa: Shares, rb: Shares, n: int, d: int, d_tr: int) -> Shares:
    """Cross term K + Kᵀ of (M_A + M_B)(M_A + M_B)ᵀ on the trainable columns, K = M_A M_Bᵀ; α·(M_A + M_B)."""
    k = ring_matmul_nt(sa["mask"][:, :d_tr], rb["mask"][:, :d_tr])
    mask = sa["mask"] + rb["mask"]
    alpha = sa["alpha"] + rb["alpha"]
    return {"cross": k + k.T - sa["cross"], "alpha_mask": ring_matvec(alpha, mask) - sa["alpha_mask"]}


# ------------------------------------------------------------------------------------------------ svec


def _svec_a(prg: PRG, d: int) -> Shares:
    return {"s": prg.u64(1), "t": prg.u64(d), "st": prg.u64(d)}


def _svec_b(prg: PRG, d: int) -> Shares:
    return {"s": prg.u64(1), "t": prg.u64(d)}


def _svec_corr(sa: Shares, rb: Shares, d: int) -> Shares:
    return {"st": (sa["s"] + rb["s"]) * (sa["t"] + rb["t"]) - sa["st"]}


KINDS: dict[str, tuple[Callable[..., Shares], Callable[..., Shares], Callable[..., Shares]]] = {
    "mul": (_mul_a, _mul_b, _mul_corr),
    "matmul": (_mm_a, _mm_b, _mm_corr),
    "cmp": (_cmp_a, _cmp_b, _cmp_corr),
    "gram": (_gram_a, _gram_b, _gram_corr),
    "svec": (_svec_a, _svec_b, _svec_corr),
}


def assemble_b(random_part: Shares, correction: Shares) -> Shares:
    """B's share: its PRG part plus the dealer's correction (the correction wins on a name clash)."""
    return {**random_part, **correction}
