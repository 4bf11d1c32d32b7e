"""The clients' side: encode an update in fixed point, check its range, and split it into two shares.

Client i draws a fresh 32-byte seed s_i. Server A receives only s_i and expands its share PRG(s_i) itself;
server B receives enc(u_i) − PRG(s_i). Each is uniform on its own: A's is pseudo-random, B's is a fixed value
minus a pseudo-random one, so neither server's view depends on the update.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import FedshieldError
from .flame_protocol import max_sq_norm
from .prg import PRG
from .ring import encode

__all__ = ["ShareError", "share_problem", "encode_update", "split_update"]


class ShareError(FedshieldError):
    """A client's update cannot be shared (non-finite, out of the fixed-point range, wrong length)."""


def share_problem(
    update: np.ndarray, frac_bits: int, d_tr: int, model_tr: np.ndarray | None = None
) -> str | None:
    """Why a client's update (trainable coordinates first) cannot be encoded, or ``None`` when it can.

    NaN/Inf, and a squared norm of the update (or, when ``model_tr`` is given, of the local model on the
    trainable coordinates) that reaches :func:`max_sq_norm` for ``frac_bits``, cannot be represented.
    """
    u = np.asarray(update, dtype=np.float64)
    if not np.isfinite(u).all():
        return "the update contains NaN or infinite values; it cannot be shared"
    limit = max_sq_norm(frac_bits)
    with np.errstate(over="ignore"):
        sq = float(u @ u)
        if sq >= limit:
            return (f"squared update norm {sq:.4g} is outside the fixed-point range "
                    f"(< {limit:.4g} with frac_bits={frac_bits})")
        if model_tr is not None:
            w = model_tr + u[:d_tr]
            sqw = float(w @ w)
            if sqw >= limit:
                return (f"squared norm of the local model {sqw:.4g} is outside the fixed-point range "
                        f"(< {limit:.4g} with frac_bits={frac_bits})")
    return None


def encode_update(
    update: np.ndarray, frac_bits: int, client: int, d_tr: int, model_tr: np.ndarray | None = None
) -> np.ndarray:
    """The ring encoding of client ``client``'s update (trainable coordinates first); :class:`ShareError` naming
    the client when :func:`share_problem` finds one."""
    problem = share_problem(update, frac_bits, d_tr, model_tr)
    if problem is not None:
        raise ShareError(f"client {client}: {problem}")
    return encode(np.asarray(update, dtype=np.float64), frac_bits)


def split_update(encoded: np.ndarray, seed: bytes) -> np.ndarray:
    """Server B's share enc(u) − PRG(seed); server A's share is PRG(seed), expanded by A from the seed."""
    return encoded - PRG(seed).u64(encoded.shape)
