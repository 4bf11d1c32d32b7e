"""The dominant kernels of Private FLAME in two 2PC engines, timed in one run: cicada-mpc and fedshield.mpc.

Kernel 1: a secret-shared Gram matrix U Uᵀ of an (n × d) matrix (fixed point, then one truncation).
Kernel 2: a batch of secure comparisons x < 0.
Kernel 0 (local, inside ours): the exact ring product x @ yᵀ mod 2^64 of two (n × d) uint64 matrices, by numpy's
wrapping int64 matmul and by 22/21/21-bit limbs in float64 BLAS (the one fedshield.mpc uses).

cicada-mpc (pure Python/numpy additive sharing over a prime field, object arrays) has no matrix product, so its
Gram is n batched elementwise products of row i against all rows, summed locally per row. fedshield.mpc uses a
dealer matrix triple (open E = U − M once, one ring matrix product per server) and a packed-bit carry circuit.
Both run two parties as two processes (cicada's SocketCommunicator) or two threads over a socket pair (ours;
the protocol is the same one the server processes run).

    PYTHONPATH=src .venv/bin/python benchmarks/mpc_engines.py [--sizes 10x10000 100x10000] [--cmp 10000]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from fedshield.mpc.local import run_local_pair
from fedshield.mpc.party import Party
from fedshield.mpc.ring import encode, ring_gram, ring_matmul_nt, ring_matmul_nt_int64


def ours_pair(fn_a, fn_b):
    return run_local_pair(fn_a, fn_b, timeout=600)


def ours_gram(p: Party, u_share: np.ndarray) -> np.ndarray:
    n, d = u_share.shape
    corr = p.corr.get("gram", n=n, d=d, d_tr=d)
    m = corr["mask"]
    e = p.open(u_share - m, "gram_e")
    if p.is_a:
        g = ring_gram(e + m) + corr["cross"]
    else:
        y = ring_matmul_nt(e, m)
        g = y + y.T + ring_gram(m) + corr["cross"]
    return p.trunc(g, 16)


def time_ours(n: int, d: int, ncmp: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    u = encode(rng.normal(size=(n, d)) * 0.01, 16)
    r = rng.integers(0, 2**63, u.shape, dtype=np.uint64) * np.uint64(2)
    t = time.perf_counter()
    ga, gb = ours_pair(lambda p: ours_gram(p, r.copy()), lambda p: ours_gram(p, u - r))
    gram_s = time.perf_counter() - t
    x = encode(rng.normal(size=ncmp), 16)
    xr = rng.integers(0, 2**63, ncmp, dtype=np.uint64)
    t = time.perf_counter()
    ca, cb = ours_pair(lambda p: p.msb(xr), lambda p: p.msb(x - xr))
    cmp_s = time.perf_counter() - t
    exact = np.abs((ga + gb).view(np.int64) / 2**16 - (u.view(np.int64) / 2**16) @ (u.view(np.int64) / 2**16).T).max()
    assert np.array_equal((ca + cb).view(np.int64), (x.view(np.int64) < 0).astype(np.int64))
    return gram_s, cmp_s, float(exact)


def _cicada_worker(communicator, n: int, d: int, ncmp: int):
    from cicada.additive import AdditiveArrayShare, AdditiveProtocolSuite

    protocol = AdditiveProtocolSuite(communicator, seed=1234)
    rng = np.random.default_rng(0)
    secret = rng.normal(size=(n, d)) * 0.01 if communicator.rank == 0 else None
    u = protocol.share(src=0, secret=secret, shape=(n, d))
    t = time.perf_counter()
    rows = []
    for i in range(n):
        row = AdditiveArrayShare(np.broadcast_to(u.storage[i], (n, d)).copy())
        prod = protocol.field_multiply(row, u)
        sums = np.array([protocol.field.sum(prod.storage[j]) for j in range(n)], dtype=object)
        rows.append(sums)
    gram = protocol.right_shift(AdditiveArrayShare(np.stack(rows)), bits=protocol.encoding.precision)
    gram_s = time.perf_counter() - t
    revealed = protocol.reveal(gram)
    xs = rng.normal(size=ncmp) if communicator.rank == 0 else None
    x = protocol.share(src=0, secret=xs, shape=(ncmp,))
    t = time.perf_counter()
    protocol.less_zero(x)
    cmp_s = time.perf_counter() - t
    err = float(np.abs(revealed - (secret @ secret.T)).max()) if communicator.rank == 0 else 0.0
    return gram_s, cmp_s, err


def time_cicada(n: int, d: int, ncmp: int) -> tuple[float, float, float] | str:
    try:
        from cicada.communicator import SocketCommunicator
    except ImportError as exc:
        return f"cicada-mpc not installed ({exc})"
    res = SocketCommunicator.run(world_size=2, fn=_cicada_worker, args=(n, d, ncmp), timeout=3600,
                                 startup_timeout=60)
    return res[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="*", default=["10x10000", "100x10000"])
    ap.add_argument("--cmp", type=int, default=10_000)
    args = ap.parse_args()
    print(f"# load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        n, d = (int(v) for v in size.split("x"))
        x = rng.integers(0, 2**64 - 1, (n, d), dtype=np.uint64, endpoint=True)
        cpu = {}
        for name, fn in (("int64 matmul", ring_matmul_nt_int64), ("float64 limbs", ring_matmul_nt)):
            t = time.process_time()
            fn(x, x)
            cpu[name] = time.process_time() - t
        print(f"ring product {n}x{d} (CPU s): int64 matmul {cpu['int64 matmul']:.3g}, float64 limbs "
              f"{cpu['float64 limbs']:.3g} ({cpu['int64 matmul'] / cpu['float64 limbs']:.1f}x)", flush=True)
    print("engine | n | d | gram_s | cmp_s (batch) | max abs error of the Gram | ratio cicada/ours (gram, cmp)")
    for size in args.sizes:
        n, d = (int(v) for v in size.split("x"))
        og, oc, oe = time_ours(n, d, args.cmp)
        print(f"fedshield.mpc | {n} | {d} | {og:.3g} | {oc:.3g} ({args.cmp}) | {oe:.2g} |", flush=True)
        c = time_cicada(n, d, args.cmp)
        if isinstance(c, str):
            print(f"cicada-mpc | {n} | {d} | - | - | - | {c}", flush=True)
        else:
            print(f"cicada-mpc | {n} | {d} | {c[0]:.3g} | {c[1]:.3g} ({args.cmp}) | {c[2]:.2g} | "
                  f"{c[0] / og:.0f}x, {c[1] / oc:.0f}x", flush=True)


if __name__ == "__main__":
    main()
