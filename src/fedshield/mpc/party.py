"""One server's side of the two-party protocol: opening, Beaver products, comparison, truncation.

Values are additive shares in Z_2^64 (``uint64`` arrays); server A holds x_A and server B holds x_B with
x = x_A + x_B. Public constants are added by A only. All operations are semi-honest two-party protocols that
use dealer correlations (:mod:`.correlations`):

* ``mul``/``matmul``: Beaver (multiplication) triples, one round;
* ``msb``: the sign bit of x, from c = open(x + r) and a carry circuit comparing the public low 63 bits of c with
  the XOR-shared bits of r (Kogge–Stone prefix over packed 64-bit words, 6 AND rounds), then a daBit turns the
  XOR-shared bit into an arithmetic one (one round): 8 rounds in all, whatever the batch size;
* ``trunc``: x >> m for |x| < 2^62, from c = open(x + 2^62 + r), the wrap bit [c < r] (the same circuit over 64
  bits) and shares of r >> m; the result is floor(x / 2^m) or one more (never a large error).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .correlations import AND_ROUNDS, KINDS, Shares, assemble_b
from .prg import PRG
from .transport import Channel

__all__ = ["Party", "CorrelationSource", "SeededSource", "DealerLink"]

_ONE = np.uint64(1)
_LOW63 = np.uint64((1 << 63) - 1)
_ALL = np.uint64((1 << 64) - 1)


def _ring(value) -> np.ndarray:
    """A public integer (or integer array, signed or not) as ring elements."""
    v = np.asarray(value)
    return v if v.dtype == np.uint64 else v.astype(np.int64).view(np.uint64)


class CorrelationSource(Protocol):
    def prefetch(self, kind: str, **params: int | list[int]) -> None: ...

    def get(self, kind: str, **params: int | list[int]) -> Shares: ...


class SeededSource:
    """Server A: every correlation share is drawn from the dealer's seed for A."""

    def __init__(self, seed: bytes):
        self.prg = PRG(seed)

    def prefetch(self, kind: str, **params) -> None:
        """Nothing to do: A draws its share locally when the program asks."""

    def get(self, kind: str, **params) -> Shares:
        return KINDS[kind][0](self.prg, **params)


class DealerLink:
    """Server B: the random part from B's seed, the correction from the dealer over ``channel``."""

    def __init__(self, seed: bytes, channel: Channel):
        self.prg = PRG(seed)
        self.channel = channel
        self._pending: list[tuple[str, dict]] = []

    def prefetch(self, kind: str, **params) -> None:
        """Ask the dealer now (it works while we receive data); the next ``get`` of this kind collects it."""
        self.channel.send({"t": "corr", "kind": kind, "params": params})
        self._pending.append((kind, params))

    def get(self, kind: str, **params) -> Shares:
        if self._pending:
            if self._pending[0] != (kind, params):
                raise RuntimeError(f"prefetched {self._pending[0]} but the program asked for {(kind, params)}")
            self._pending.pop(0)
        else:
            self.channel.send({"t": "corr", "kind": kind, "params": params})
        rnd = KINDS[kind][1](self.prg, **params)
        corr: Shares = {}
        while True:
            header, array = self.channel.recv()
            if header.get("t") == "corr_done":
                break
            if header.get("t") != "corr_part" or array is None:
                raise RuntimeError(f"dealer sent {header.get('t')!r} instead of a correlation")
            corr[str(header["name"])] = array
        return assemble_b(rnd, corr)


class Party:
    """Server A (``role="A"``) or B, with its channel to the other server and its correlation source."""

    def __init__(self, role: str, peer: Channel, corr: CorrelationSource):
        if role not in ("A", "B"):
            raise ValueError(f"role must be 'A' or 'B', got {role!r}")
        self.role = role
        self.is_a = role == "A"
        self.peer = peer
        self.corr = corr
        self.rounds = 0

    # ------------------------------------------------------------------------------------------ basics

    def const(self, value, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Shares of a public constant (A holds it, B holds zero)."""
        v = _ring(value)
        v = np.broadcast_to(v, shape if shape is not None else v.shape)
        return np.array(v) if self.is_a else np.zeros(v.shape, dtype=np.uint64)

    def add_const(self, x: np.ndarray, value) -> np.ndarray:
        """x + public value (A adds it)."""
        return x + _ring(value) if self.is_a else x.copy()

    def open(self, x: np.ndarray, tag: str = "open") -> np.ndarray:
        """Reveal x to both servers."""
        self.rounds += 1
        other = self.peer.exchange(tag, np.ascontiguousarray(x, dtype=np.uint64))
        other += x
        return other

    def open_xor(self, x: np.ndarray, tag: str = "openx") -> np.ndarray:
        self.rounds += 1
        return x ^ self.peer.exchange(tag, np.ascontiguousarray(x, dtype=np.uint64))

    # ------------------------------------------------------------------------------------------ products

    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Elementwise x·y (shapes broadcast), one Beaver triple per element."""
        x, y = np.broadcast_arrays(np.asarray(x, np.uint64), np.asarray(y, np.uint64))
        shape = x.shape
        t = self.corr.get("mul", shape=list(shape))
        both = self.open(np.stack([x - t["a"], y - t["b"]]), "mul")
        e, f = both[0], both[1]
        z = t["c"] + e * t["b"] + f * t["a"]
        return z + e * f if self.is_a else z

    def matmul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """x @ y for shared (n, k) and (k, m) matrices, one matrix triple."""
        n, k = x.shape
        m = y.shape[1]
        t = self.corr.get("matmul", n=n, k=k, m=m)
        e = self.open((x - t["x"]).ravel(), "mm_e").reshape(n, k)
        f = self.open((y - t["y"]).ravel(), "mm_f").reshape(k, m)
        mm = lambda a, b: (a.view(np.int64) @ b.view(np.int64)).view(np.uint64)  # noqa: E731
        z = t["z"] + mm(e, t["y"]) + mm(t["x"], f)
        return z + mm(e, f) if self.is_a else z

    def scalar_vec(self, s: np.ndarray, v: np.ndarray) -> np.ndarray:
        """s·v for a shared scalar (shape (1,)) and a shared vector."""
        t = self.corr.get("svec", d=int(v.size))
        both = self.open(np.concatenate([s - t["s"], v - t["t"]]), "svec")
        eps, delta = both[:1], both[1:]
        z = t["st"] + eps * t["t"] + delta * t["s"]
        return z + eps * delta if self.is_a else z

    # ------------------------------------------------------------------------------------------ boolean

    def _and(self, x: np.ndarray, y: np.ndarray, ta: np.ndarray, tb: np.ndarray, tc: np.ndarray) -> np.ndarray:
        both = self.open_xor(np.stack([x ^ ta, y ^ tb]), "and")
        e, f = both[0], both[1]
        z = tc ^ (e & tb) ^ (f & ta)
        return z ^ (e & f) if self.is_a else z

    def _carry(self, c: np.ndarray, rb: np.ndarray, width_mask: np.uint64, t: Shares) -> np.ndarray:
        """XOR shares of words whose top bit (of the masked width) is [c < r] on those bits (c public)."""
        g = ~c & rb & width_mask  # r has a 1 where c has a 0: r is larger at this position
        p = ((~c ^ rb) if self.is_a else rb) & width_mask  # positions where the bits agree
        ta, tb, tc = t["ta"], t["tb"], t["tc"]
        shift = 1
        for rnd in range(AND_ROUNDS):
            s = np.uint64(shift)
            if rnd < AND_ROUNDS - 1:
                rows = slice(2 * rnd, 2 * rnd + 2)
                z = self._and(np.stack([p, p]), np.stack([g << s, p << s]), ta[rows], tb[rows], tc[rows])
                g, p = g ^ z[0], z[1]
            else:
                g = g ^ self._and(p, g << s, ta[-1], tb[-1], tc[-1])
            shift *= 2
        return g

    def _b2a(self, bit: np.ndarray, t: Shares) -> np.ndarray:
        """Arithmetic shares of a bit given as XOR shares in the low bit, with the daBit (px, pa)."""
        e = self.open_xor(bit ^ t["px"], "b2a") & _ONE
        one_minus_2e = _ONE - (e << _ONE)
        res = one_minus_2e * t["pa"]
        return res + e if self.is_a else res

    def msb(self, x: np.ndarray) -> np.ndarray:
        """Arithmetic shares of the sign bit [x < 0] (x read as a signed 64-bit integer)."""
        shape = x.shape
        x = x.ravel()
        t = self.corr.get("cmp", n=int(x.size), shift=0)
        c = self.open(x + t["r"], "cmp")
        lt = (self._carry(c, t["rb"], _LOW63, t) >> np.uint64(62)) & _ONE
        top = (t["rb"] >> np.uint64(63)) ^ lt
        if self.is_a:
            top = top ^ (c >> np.uint64(63))
        return self._b2a(top, t).reshape(shape)

    def trunc(self, x: np.ndarray, m: int) -> np.ndarray:
        """floor(x / 2^m) or one more, for |x| < 2^62 (signed)."""
        if m == 0:
            return x.copy()
        shape = x.shape
        x = x.ravel()
        t = self.corr.get("cmp", n=int(x.size), shift=m)
        bias = np.uint64(1 << 62)
        c = self.open(self.add_const(x, bias) + t["r"], "trunc")
        wrap_bits = (self._carry(c, t["rb"], _ALL, t) >> np.uint64(63)) & _ONE
        wrap = self._b2a(wrap_bits, t)
        res = wrap * np.uint64(1 << (64 - m)) - t["rs"]
        if self.is_a:
            res = res + (c >> np.uint64(m)) - np.uint64(1 << (62 - m))
        return res.reshape(shape)

    def mul_trunc(self, x: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
        return self.trunc(self.mul(x, y), m)
