"""Private FLAME's Gram and comparison kernels on cicada-mpc 2.1.0 with two players, plus a privacy check.

Runs in the main environment (cicada is pure Python and numpy; two player processes over loopback TCP, started
by ``SocketCommunicator.run``):

    .venv/bin/pip install "torch==2.13.0" "cicada-mpc==2.1.0"
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mpc_engines_cicada.py [--cap 180]

Kernels, with cicada's ``AdditiveProtocolSuite`` (field of the largest prime below 2^64, numpy ``object``
arrays, 16 fraction bits):

- ``gram``: X X^T of secret n x d X, as n(n+1)/2 ``dot`` products of secret rows;
- ``cmp``:  ``less`` of two secret vectors of m values.

Privacy check: cicada multiplies shares without Beaver triples (Du-Atallah style: players send each other their
shares of the operands, "ensuring that no one player receives every share"). With two players that cannot hold,
so the script records what player 1 receives during one ``field_multiply`` and checks whether it, added to player
1's own share, is the secret.

Every measurement runs in its own process group, killed after ``--cap`` seconds. Seconds are player 0's wall
time for the protocol (sharing excluded); bytes are player 0's sent bytes from ``communicator.stats``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def player(communicator, kernel: str, n: int, d: int, seed: int) -> dict:
    import numpy as np
    from cicada.additive import AdditiveProtocolSuite
    from cicada.encoding import Boolean

    protocol = AdditiveProtocolSuite(communicator)
    rng = np.random.default_rng(seed)  # the same public seed on both players: player 0 shares, both check
    if kernel == "gram":
        x = rng.standard_normal((n, d)) * 0.01
        rows = [protocol.share(src=0, secret=x[i], shape=(d,)) for i in range(n)]
        before = communicator.stats["total"]["sent"]["bytes"]
        t = time.perf_counter()
        gram = {}
        for i in range(n):
            for j in range(i, n):
                gram[i, j] = protocol.dot(rows[i], rows[j])
        seconds = time.perf_counter() - t
        sent = communicator.stats["total"]["sent"]["bytes"] - before
        out = np.zeros((n, n))
        for (i, j), share in gram.items():
            out[i, j] = out[j, i] = protocol.reveal(share)  # reveal decodes the fixed point
        err = float(np.max(np.abs(out - x @ x.T)))
    elif kernel == "cmp":
        a, b = rng.standard_normal(n), rng.standard_normal(n)
        sa = protocol.share(src=0, secret=a, shape=(n,))
        sb = protocol.share(src=0, secret=b, shape=(n,))
        before = communicator.stats["total"]["sent"]["bytes"]
        t = time.perf_counter()
        less = protocol.less(sa, sb)
        seconds = time.perf_counter() - t
        sent = communicator.stats["total"]["sent"]["bytes"] - before
        err = float(np.mean(protocol.reveal(less, encoding=Boolean()) != (a < b)))
    elif kernel == "leak":
        return leak_check(communicator, protocol, rng)
    else:
        raise ValueError(f"unknown kernel {kernel!r}")
    return {"seconds": seconds, "bytes_sent": sent, "error": err}


def leak_check(communicator, protocol, rng) -> dict:
    """Player 1's view of one secret x secret multiplication: does it contain player 0's share of x?"""
    import numpy as np

    secret = rng.standard_normal(5)
    x = protocol.share(src=0, secret=secret, shape=(5,))
    y = protocol.share(src=0, secret=secret, shape=(5,))
    received = []
    original = communicator.scatterv

    def recording_scatterv(*args, **kwargs):
        value = original(*args, **kwargs)
        if value is not None:
            received.append(value)
        return value

    communicator.scatterv = recording_scatterv
    protocol.field_multiply(x, y)
    communicator.scatterv = original
    if communicator.rank != 1:
        return {"received_arrays": len(received)}
    own = x.storage
    rebuilt = [protocol.encoding.decode(protocol.field.add(own, r), protocol.field) for r in received]
    return {"received_arrays": len(received),
            "player1_reconstructs_x": any(np.allclose(v, secret, atol=1e-4) for v in rebuilt)}


def worker(spec: dict) -> dict:
    from cicada.communicator import SocketCommunicator

    results = SocketCommunicator.run(world_size=2, fn=player, args=(spec["kernel"], spec["n"], spec["d"], 0),
                                     timeout=600, startup_timeout=60)
    for rank, r in enumerate(results):
        if not isinstance(r, dict):
            raise RuntimeError(f"player {rank}: {r}")
    return results[0] if spec["kernel"] != "leak" else {**results[0], **results[1]}


def measure(spec: dict, cap: float) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {**spec, "status": f"did not finish in {cap:.0f} s"}
    if proc.returncode != 0:
        return {**spec, "status": f"failed (exit {proc.returncode}): {err.strip()[-300:]}"}
    return {**spec, "status": "ok", **json.loads(out.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cap", type=float, default=180.0)
    ap.add_argument("--out", default=str(ROOT / "runs" / "mpc_engines_cicada"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    specs = [{"kernel": "leak", "n": 5, "d": 1}, {"kernel": "gram", "n": 10, "d": 1_000},
             {"kernel": "gram", "n": 10, "d": 10_000}, {"kernel": "gram", "n": 10, "d": 100_000},
             {"kernel": "cmp", "n": 100, "d": 1}, {"kernel": "cmp", "n": 1_000, "d": 1}]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in specs:
        rows.append(measure(spec, args.cap))
        print(json.dumps(rows[-1]), flush=True)
        (out / "results.json").write_text(json.dumps(rows, indent=1))
    lines = ["| kernel | n | d | seconds | sent by player 0 | max error |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["kernel"] == "leak":
            continue
        if r["status"] != "ok":
            lines.append(f"| {r['kernel']} | {r['n']} | {r['d']} | {r['status']} | | |")
        else:
            lines.append(f"| {r['kernel']} | {r['n']} | {r['d']} | {r['seconds']:.2f} | "
                         f"{r['bytes_sent'] / 2**20:,.2f} MiB | {r['error']:.2g} |")
    leak = rows[0]
    md = (f"load average before: {os.getloadavg()}\n\nprivacy check (2 players, one field_multiply): {leak}\n\n"
          + "\n".join(lines) + "\n")
    (out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
