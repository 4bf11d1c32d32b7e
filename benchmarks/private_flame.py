"""Seconds per step and bytes of one Private FLAME round, against plaintext FLAME on the same inputs, in one run.

For n in {10, 50, 100} clients and d in {10^4, 431,080 (lenet)} parameters: synthetic updates (20 % attackers
pulling in another direction, float32, a random global model), then

* plaintext FLAME with ``clustering="dbscan"`` (the twin) and with the default HDBSCAN, timed here;
* ``private_flame`` (two server processes on this machine, started before the clock runs): wall seconds per
  step (sharing, cosine, clustering, median, clipping_mean, noise), total, CPU seconds of the coordinator (clients
  + dealer) and of each server, and the bytes each party sent.

The ratio columns are private / plaintext, measured in the same run. ``--quick``: n = 10, d = 10^4 only.

    PYTHONPATH=src .venv/bin/python benchmarks/private_flame.py [--quick] [--n 100 --d 431080] [--lam 0.001]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np
import torch

from fedshield.defenses import RoundInput
from fedshield.defenses.flame import FLAME
from fedshield.defenses.private_flame import PrivateFLAME
from fedshield.models import LayoutEntry, ParamLayout

STEPS = ["sharing", "cosine", "clustering", "median", "clipping_mean", "noise"]


def synthetic_input(n: int, d: int, seed: int = 0) -> RoundInput:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=d).astype(np.float32)
    u = (base + 0.5 * rng.normal(size=(n, d)).astype(np.float32)) * 1e-3
    k = max(1, n // 5)
    u[:k] = (rng.normal(size=d).astype(np.float32) + 0.5 * rng.normal(size=(k, d)).astype(np.float32)) * 3e-3
    g = rng.normal(size=d).astype(np.float32) * 0.05
    layout = ParamLayout((LayoutEntry("w", (d,), 0, d, "weight"),))
    return RoundInput(torch.from_numpy(g), torch.from_numpy(u), layout, 1, list(range(n)), torch.ones(n),
                      torch.Generator().manual_seed(seed))


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a live process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bench(n: int, d: int, lam: float) -> dict[str, float]:
    inp = synthetic_input(n, d)
    row: dict[str, float] = {"n": n, "d": d}
    t = time.perf_counter()
    twin = FLAME(clustering="dbscan", lam=lam).aggregate(inp)
    row["plain_dbscan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    FLAME(lam=lam).aggregate(inp)
    row["plain_hdbscan_s"] = time.perf_counter() - t
    with PrivateFLAME(lam=lam, timeout_s=1200) as private:
        pids = private.server_pair.pids
        cpu0 = {r: cpu_seconds(p) for r, p in pids.items()}
        me0 = self_cpu()
        t = time.perf_counter()
        agg = private.aggregate(inp)
        row["private_s"] = time.perf_counter() - t
        row["cpu_coord_s"] = self_cpu() - me0
        for r, p in pids.items():
            row[f"cpu_{r}_s"] = cpu_seconds(p) - cpu0[r]
    for s in STEPS:
        row[s] = agg.info.get(f"mpc_s_{s}", float("nan"))
    row["MB_A_to_B"] = agg.info["mpc_mbytes_A_to_B"]
    row["MB_B_to_A"] = agg.info["mpc_mbytes_B_to_A"]
    row["exchanges"] = agg.info["mpc_exchanges"]
    row["same_admitted"] = float(agg.accepted.tolist() == twin.accepted.tolist())
    row["ratio_dbscan"] = row["private_s"] / row["plain_dbscan_s"]
    row["ratio_hdbscan"] = row["private_s"] / row["plain_hdbscan_s"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 10, d = 10^4 only")
    ap.add_argument("--n", type=int, nargs="*", default=None)
    ap.add_argument("--d", type=int, nargs="*", default=None)
    ap.add_argument("--lam", type=float, default=0.001)
    args = ap.parse_args()
    ns = args.n or ([10] if args.quick else [10, 50, 100])
    ds = args.d or ([10_000] if args.quick else [10_000, 431_080])
    cols = ["n", "d", *STEPS, "private_s", "cpu_coord_s", "cpu_A_s", "cpu_B_s", "MB_A_to_B", "MB_B_to_A",
            "exchanges", "plain_dbscan_s", "plain_hdbscan_s", "ratio_dbscan", "ratio_hdbscan", "same_admitted"]
    print(f"# load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    print(" | ".join(cols), flush=True)
    for d in ds:
        for n in ns:
            row = bench(n, d, args.lam)
            print(" | ".join(f"{row[c]:.0f}" if c in ("n", "d", "exchanges") else f"{row[c]:.3g}" for c in cols),
                  flush=True)
    print(f"# load average at end: {os.getloadavg()[0]:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
