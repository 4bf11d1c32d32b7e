"""Seconds per step and bytes of one Private FLAME round, against plaintext FLAME on the same inputs, in one run.

For n in {10, 50, 100} clients and d in {10^4, 431,080 (lenet)} parameters: synthetic updates (20 % attackers
pulling in another direction, float32, a random global model), then

* plaintext FLAME with ``clustering="dbscan"`` (the twin) and with the default HDBSCAN, timed here;
* ``private_flame`` (two server processes on this machine, started before the clock runs): wall seconds per
  step (sharing, cosine, clustering, median, clipping_mean, noise), total, CPU seconds of the coordinator (clients
  + dealer) and of each server, and the bytes each party sent.

The ratio columns are private / plaintext, measured in the same run. ``--quick``: n = 10, d = 10^4 only.

``--correlations dealer cheetah`` also runs each size without the dealer (the servers compute the correlations
under SPU's CHEETAH protocol, in ``.venv-spu``: ``make spu``), ``--rounds`` times on the same servers (the first
round compiles SPU's programs for these sizes and sets up SPU's link and CHEETAH's OT; later rounds reuse them).
Its rows add the wall and CPU seconds each server spent in SPU, the bytes SPU's link sent (included in MB_A_sent
and MB_B_sent, which also hold the server channel's bytes) and the ratios to the dealer mode's row of the same
size in the same run (wall: x_dealer_s; CPU of the coordinator and both servers together, since the dealer's
work is the coordinator's: x_dealer_cpu).

    PYTHONPATH=src .venv/bin/python benchmarks/private_flame.py [--quick] [--n 100 --d 431080] [--lam 0.001]
    PYTHONPATH=src .venv/bin/python benchmarks/private_flame.py --n 10 100 --d 10000 --correlations dealer cheetah
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


def private_round(inp: RoundInput, lam: float, correlations: str, rounds: int) -> list[dict[str, float]]:
    """``rounds`` rounds of private_flame on the same two servers (started before the clock runs)."""
    rows = []
    with PrivateFLAME(lam=lam, timeout_s=3600, correlations=correlations) as private:
        pids = private.server_pair.pids
        for rnd in range(rounds):
            cpu0 = {r: cpu_seconds(p) for r, p in pids.items()}
            me0 = self_cpu()
            inp.generator.manual_seed(0)  # every round the same seeds: the rounds differ only in what is warm
            t = time.perf_counter()
            agg = private.aggregate(inp)
            row = {"mode": correlations, "round": rnd + 1, "private_s": time.perf_counter() - t,
                   "cpu_coord_s": self_cpu() - me0}
            for r, p in pids.items():
                row[f"cpu_{r}_s"] = cpu_seconds(p) - cpu0[r]
            for s in STEPS:
                row[s] = agg.info.get(f"mpc_s_{s}", float("nan"))
            row["MB_A_sent"] = agg.info["mpc_mbytes_A_to_B"] + agg.info.get("mpc_mbytes_spu_A_to_B", 0.0)
            row["MB_B_sent"] = agg.info["mpc_mbytes_B_to_A"] + agg.info.get("mpc_mbytes_spu_B_to_A", 0.0)
            row["spu_cpu_A_s"] = agg.info.get("mpc_spu_cpu_s_A", 0.0)
            row["spu_cpu_B_s"] = agg.info.get("mpc_spu_cpu_s_B", 0.0)
            row["exchanges"] = agg.info["mpc_exchanges"]
            row["accepted"] = agg.accepted.tolist()
            row["model"] = agg.global_params.clone()
            rows.append(row)
    return rows


def bench(n: int, d: int, lam: float, modes: list[str], rounds: int) -> list[dict[str, float]]:
    inp = synthetic_input(n, d)
    base: dict[str, float] = {"n": n, "d": d}
    t = time.perf_counter()
    twin = FLAME(clustering="dbscan", lam=lam).aggregate(inp)
    base["plain_dbscan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    FLAME(lam=lam).aggregate(inp)
    base["plain_hdbscan_s"] = time.perf_counter() - t
    rows = []
    for mode in modes:
        rows += [{**base, **r} for r in private_round(inp, lam, mode, 1 if mode == "dealer" else rounds)]
    dealer = next((r for r in rows if r["mode"] == "dealer"), None)
    for row in rows:
        row["same_admitted"] = float(row["accepted"] == twin.accepted.tolist())
        row["ratio_dbscan"] = row["private_s"] / row["plain_dbscan_s"]
        row["ratio_hdbscan"] = row["private_s"] / row["plain_hdbscan_s"]
        if dealer is not None:
            row["x_dealer_s"] = row["private_s"] / dealer["private_s"]
            every = ("cpu_coord_s", "cpu_A_s", "cpu_B_s")  # the dealer's CPU is the coordinator's, so count all three
            row["x_dealer_cpu"] = sum(row[c] for c in every) / sum(dealer[c] for c in every)
            row["same_as_dealer"] = float(bool(torch.equal(row["model"], dealer["model"])))
    return rows


def fmt(value, col: str) -> str:
    if isinstance(value, str):
        return value
    return f"{value:.0f}" if col in ("n", "d", "round", "exchanges") else f"{value:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 10, d = 10^4 only")
    ap.add_argument("--n", type=int, nargs="*", default=None)
    ap.add_argument("--d", type=int, nargs="*", default=None)
    ap.add_argument("--lam", type=float, default=0.001)
    ap.add_argument("--correlations", nargs="+", choices=["dealer", "cheetah"], default=["dealer"],
                    help="correlation sources to run (cheetah: no dealer, SPU CHEETAH; needs .venv-spu)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds per size in cheetah mode (first: cold)")
    args = ap.parse_args()
    ns = args.n or ([10] if args.quick else [10, 50, 100])
    ds = args.d or ([10_000] if args.quick else [10_000, 431_080])
    cols = ["n", "d", "mode", "round", *STEPS, "private_s", "cpu_coord_s", "cpu_A_s", "cpu_B_s", "MB_A_sent",
            "MB_B_sent", "exchanges", "plain_dbscan_s", "plain_hdbscan_s", "ratio_dbscan", "ratio_hdbscan",
            "same_admitted"]
    if "cheetah" in args.correlations:
        cols += ["spu_cpu_A_s", "spu_cpu_B_s", "x_dealer_s", "x_dealer_cpu", "same_as_dealer"]
    print(f"# load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    print(" | ".join(cols), flush=True)
    for d in ds:
        for n in ns:
            for row in bench(n, d, args.lam, args.correlations, args.rounds):
                print(" | ".join(fmt(row.get(c, float("nan")), c) for c in cols), flush=True)
    print(f"# load average at end: {os.getloadavg()[0]:.1f}", file=sys.stderr)


if __name__ == "__main__":
    main()
