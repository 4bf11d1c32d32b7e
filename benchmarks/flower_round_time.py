"""Seconds per round of the same small experiment on three engines, in one run:

1. the in-process simulator (``fedshield run``),
2. Flower's simulation engine (``flwr run <app> local``, Ray; a managed local SuperLink, stopped afterwards),
3. a Flower deployment on loopback (a SuperLink and 3 SuperNodes as processes, ``flwr run <app> <connection>``).

The experiment is ``examples/flower/configs/synthetic3_flame.yaml`` (3 clients, synthetic data, small_cnn,
one pixel attacker, FLAME; server-side MA/BA every round). A Flower round is timed from the end of the previous
round's server evaluation to the end of its own (train, aggregate, evaluate), from the strategy's JSON-lines
log; the simulator's from its summary (seconds after set-up / rounds).

    .venv/bin/python benchmarks/flower_round_time.py [--rounds 3] [--skip-simulation] [--skip-deployment]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "flower"
CONFIG = APP / "configs" / "synthetic3_flame.yaml"


def flower_round_seconds(log: Path) -> list[float]:
    events = [json.loads(line) for line in log.read_text().splitlines()]
    ends = [e["time"] for e in events if e["event"] == "evaluate"]  # round 0 (initial model), 1, 2, ...
    return [b - a for a, b in zip(ends, ends[1:])]


def describe(name: str, per_round: list[float], wall: float) -> str:
    later = per_round[1:] or per_round
    return (f"{name:<22} round 1: {per_round[0]:7.2f} s   rounds 2..{len(per_round)}: mean {statistics.mean(later):6.2f} s"
            f" (min {min(later):.2f}, max {max(later):.2f})   whole command: {wall:6.1f} s")


def bench_simulator(rounds: int, work: Path) -> str:
    out = work / "sim-run"
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "fedshield"), "run", str(CONFIG), "--set", f"rounds={rounds}",
                    "--out", str(out), "--quiet"], check=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    import csv

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    per_round = [float(r["train_s"]) + float(r["aggregate_s"]) + float(r.get("eval_s") or 0) for r in rows]
    return describe("in-process simulator", per_round, wall)


def bench_flower_simulation(rounds: int, work: Path) -> str:
    from fedshield.flower.localnet import run_simulation

    log = work / "flwr-sim.jsonl"
    t0 = time.perf_counter()
    p = run_simulation(APP, work / "flwr-sim", {"num-server-rounds": rounds, "log-file": str(log)}, timeout=600)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"flwr run (simulation) failed:\n{p.stdout[-3000:]}")
    return describe("Flower simulation", flower_round_seconds(log), wall)


def bench_flower_deployment(rounds: int, work: Path) -> str:
    from fedshield.flower.localnet import LocalFederation

    log = work / "flwr-dep.jsonl"
    t0 = time.perf_counter()
    with LocalFederation(work / "flwr-dep", num_nodes=3) as fed:
        p = fed.run(APP, {"num-server-rounds": rounds, "log-file": str(log)}, timeout=600)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"flwr run (deployment) failed:\n{p.stdout[-3000:]}")
    return describe("Flower deployment", flower_round_seconds(log), wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-simulation", action="store_true", help="skip Flower's simulation engine (Ray)")
    ap.add_argument("--skip-deployment", action="store_true", help="skip the loopback deployment")
    args = ap.parse_args()
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
    print(f"config {CONFIG.relative_to(ROOT)}, {args.rounds} rounds, {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="fedshield-flower-bench-") as tmp:
        work = Path(tmp)
        lines = [bench_simulator(args.rounds, work)]
        print(lines[-1], flush=True)
        if not args.skip_simulation:
            lines.append(bench_flower_simulation(args.rounds, work))
            print(lines[-1], flush=True)
        if not args.skip_deployment:
            lines.append(bench_flower_deployment(args.rounds, work))
            print(lines[-1], flush=True)
    print("\n".join(["", "summary:", *lines]))


if __name__ == "__main__":
    main()
