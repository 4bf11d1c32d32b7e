"""Arithmetic in the ring Z_2^64 and the fixed-point encoding of reals into it.

Shares and secrets are numpy ``uint64`` arrays; numpy's unsigned (and signed) integer arithmetic wraps, so
``+``, ``-``, ``*`` and ``@`` on these arrays are exactly the ring operations mod 2^64. A real x is encoded with
``f`` fractional bits as round(x · 2^f) in two's complement; reading an element as ``int64`` gives the signed value.
"""

from __future__ import annotations

import numpy as np

__all__ = ["U64", "encode", "decode", "signed", "ring_matmul_nt", "ring_gram", "ring_matvec"]

U64 = np.uint64


def encode(x: np.ndarray, frac_bits: int) -> np.ndarray:
    """round(x · 2^f) as ring elements (two's complement); ``x`` must be finite and |x·2^f| < 2^63."""
    scaled = np.rint(np.asarray(x, dtype=np.float64) * float(2**frac_bits))
    return scaled.astype(np.int64).view(np.uint64)


def signed(x: np.ndarray) -> np.ndarray:
    """The ring elements read as signed integers in [-2^63, 2^63)."""
    return np.asarray(x, dtype=np.uint64).view(np.int64)


def decode(x: np.ndarray, frac_bits: int) -> np.ndarray:
    """float64 value of ring elements carrying ``frac_bits`` fractional bits."""
    return signed(x).astype(np.float64) / float(2**frac_bits)


def ring_matmul_nt(x: np.ndarray, y: np.ndarray, block: int = 65536) -> np.ndarray:
    """x @ y.T mod 2^64 for (n, d) and (m, d) uint64 matrices, exactly.

    numpy's int64 matmul wraps mod 2^64 and, measured on this project's machines, is as fast as splitting into
    16-bit limbs for float64 BLAS (benchmarks/mpc_engines.py); ``block`` columns at a time keep temporaries small.
    """
    n, d = x.shape
    out = np.zeros((n, y.shape[0]), dtype=np.int64)
    xs, ys = x.view(np.int64), y.view(np.int64)
    for s in range(0, d, block):
        out += xs[:, s : s + block] @ ys[:, s : s + block].T
    return out.view(np.uint64)


def ring_gram(x: np.ndarray, row_blocks: int = 4, part: tuple[int, int] | None = None) -> np.ndarray:
    """x @ x.T mod 2^64, computing only the blocks on and above the diagonal (10 of 16 for 4 row blocks).

    With ``part=(k, parts)`` only every ``parts``-th of those blocks, starting at the k-th, is computed and the
    rest of the result is zero: the partial results of k = 0 .. parts-1 add up to x @ x.T.
    """
    n = x.shape[0]
    edges = np.linspace(0, n, min(row_blocks, n) + 1).astype(int)
    out = np.zeros((n, n), dtype=np.uint64)
    index = 0
    for a in range(len(edges) - 1):
        ra = slice(edges[a], edges[a + 1])
        for b in range(a, len(edges) - 1):
            mine = part is None or index % part[1] == part[0]
            index += 1
            if not mine:
                continue
            rb = slice(edges[b], edges[b + 1])
            blk = ring_matmul_nt(x[ra], x[rb])
            out[ra, rb] = blk
            out[rb, ra] = blk.T
    return out


def ring_matvec(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """a @ x mod 2^64 for a (k, n) and x (n, d) (uint64)."""
    return (a.view(np.int64) @ x.view(np.int64)).view(np.uint64)
