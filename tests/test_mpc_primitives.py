"""fedshield.mpc primitives on exact known answers: ring products, comparison, truncation, Newton, median."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from fedshield.mpc.flame_protocol import rsqrt, true_median
from fedshield.mpc.local import run_local_pair
from fedshield.mpc.prg import PRG
from fedshield.mpc.ring import decode, encode, ring_gram, ring_matmul_nt, ring_matmul_nt_int64
from fedshield.mpc.transport import Channel, ChannelError, parse_address


def run_pair(fn_a, fn_b):
    """Run fn_a(server A) and fn_b(server B) in two threads over socket pairs, with a dealer thread."""
    return run_local_pair(fn_a, fn_b, timeout=30)


def share(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x).astype(np.int64).view(np.uint64)
    r = rng.integers(0, 2**63, x.shape, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, x.shape, dtype=np.uint64)
    return r, x - r


def reveal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a + b).view(np.int64)


def test_ring_products_wrap_mod_2_64():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**64 - 1, (5, 40), dtype=np.uint64, endpoint=True)
    y = rng.integers(0, 2**64 - 1, (3, 40), dtype=np.uint64, endpoint=True)
    exact = [[sum(int(a) * int(b) for a, b in zip(xr, yr)) % 2**64 for yr in y] for xr in x]
    assert ring_matmul_nt(x, y).tolist() == exact
    assert ring_matmul_nt_int64(x, y, block=7).tolist() == exact
    big = rng.integers(0, 2**64 - 1, (4, 1300), dtype=np.uint64, endpoint=True)  # several chunks, all-ones limbs
    big[0] = np.uint64(2**64 - 1)
    assert np.array_equal(ring_matmul_nt(big, big), ring_matmul_nt_int64(big, big))
    gram = [[sum(int(a) * int(b) for a, b in zip(xr, xs)) % 2**64 for xs in x] for xr in x]
    assert ring_gram(x).tolist() == gram


def test_fixed_point_encoding():
    v = np.array([1.5, -0.25, 3e-5, -7.0])
    enc = encode(v, 16)
    assert enc.view(np.int64).tolist() == [98304, -16384, 2, -458752]
    assert decode(enc, 16).tolist() == [1.5, -0.25, 2 / 65536, -7.0]


def test_prg_is_a_deterministic_stream():
    a, b = PRG(bytes(range(32))), PRG(bytes(range(32)))
    first = a.u64(5)
    assert np.array_equal(np.concatenate([first, a.u64(3)]), b.u64(8))
    assert not np.array_equal(first, PRG(bytes(32)).u64(5))
    with pytest.raises(ValueError, match="32 bytes"):
        PRG(b"short")


def test_msb_trunc_mul_matmul_exact():
    rng = np.random.default_rng(1)
    x = np.concatenate([[0, -1, 1, 2**61, -(2**61), 2**62 - 1, -(2**62)], rng.integers(-(2**61), 2**61, 500)])
    y = rng.integers(-(2**20), 2**20, 12)
    xa, xb = share(x, rng)
    ya, yb = share(y, rng)

    def prog(xs, ys):
        return lambda p: (p.msb(xs), p.trunc(xs[1:], 20), p.mul(ys, ys),
                          p.matmul(ys[:6].reshape(2, 3), ys[6:].reshape(3, 2)))

    a, b = run_pair(prog(xa, ya), prog(xb, yb))
    assert reveal(a[0], b[0]).tolist() == (x < 0).astype(int).tolist()
    err = reveal(a[1], b[1]) - (x[1:] >> 20)
    assert set(np.unique(err).tolist()) <= {0, 1}  # floor, or one more
    assert reveal(a[2], b[2]).tolist() == (y * y).tolist()
    assert reveal(a[3], b[3]).tolist() == (y[:6].reshape(2, 3) @ y[6:].reshape(3, 2)).tolist()


def test_rsqrt_and_true_median_under_2pc():
    rng = np.random.default_rng(2)
    y = np.array([1.0, 1.7, 2.0, 3.99])
    e = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 3.0])  # even n with a tie: median (3 + 3) / 2
    ya, yb = share(encode(y, 28), rng)
    ea, eb = share(encode(e, 20), rng)
    a, b = run_pair(lambda p: (rsqrt(p, ya), true_median(p, ea), true_median(p, ea[:5])),
                    lambda p: (rsqrt(p, yb), true_median(p, eb), true_median(p, eb[:5])))
    assert np.allclose(decode(a[0] + b[0], 28), 1 / np.sqrt(y), atol=2e-8)
    assert decode(a[1] + b[1], 20)[0] == pytest.approx(3.0, abs=2e-6)
    assert decode(a[2] + b[2], 20)[0] == pytest.approx(3.0, abs=1e-9)  # odd n: the middle of 5,1,4,2,3


def test_transport_rejects_bad_addresses_and_reports_closed_peer():
    with pytest.raises(ValueError, match="host:port"):
        parse_address("localhost")
    s1, s2 = socket.socketpair()
    a, b = Channel(s1, "server B", 5), Channel(s2, "server A", 5)
    a.send({"t": "x"}, np.arange(3, dtype=np.uint64))
    header, arr = b.recv("x")
    assert header["t"] == "x" and arr.tolist() == [0, 1, 2]
    a.close()
    with pytest.raises(ChannelError, match="server A closed the connection"):
        b.recv("y")


def test_ring_gram_parts_add_up():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 2**64 - 1, (9, 3000), dtype=np.uint64, endpoint=True)  # 6 chunks of <= 512 columns
    x[0] = np.uint64(2**64 - 1)  # the largest limbs: partial sums reach their bound
    parts = [ring_gram(x, part=(k, 3)) for k in range(3)]
    assert np.array_equal(parts[0] + parts[1] + parts[2], ring_matmul_nt_int64(x, x))
    assert np.array_equal(ring_gram(x), ring_matmul_nt_int64(x, x))
    assert not np.array_equal(parts[0], parts[1])
