"""Seconds per round of one experiment in-process (``fedshield run``) and as a Flower deployment
(``fedshield federate``), in one run, and where a deployed round's time goes.

The deployment runs twice on the same config and nodes:

* before: one message (one ``flwr-clientapp`` process) per client, the ServerApp pulling replies every 3 s
  (Flower's own grid); that is how fedshield's Flower path worked before;
* after (the defaults of ``fedshield federate``): one message per node naming all its selected clients,
  trained in one process, and replies pulled every 0.1 s.

Each deployed round is split along its slowest client, from the ClientApp's wall-clock stamps and the
strategy's round log (``<out>/flower/rounds.jsonl``):

  A  Flower: the message reaches the node (SuperNode polls the SuperLink every 3 s when idle; SuperExec 0.1 s)
  B  the new ``flwr-clientapp`` process: Python, imports (flwr, torch, fedshield), FAB install, app loading
  C  fedshield set-up in that process (dataset, partition, model, attack)
  D  local training (the process's first optimizer also imports torch._dynamo)
  E  Flower: the reply reaches the ServerApp (SuperNode waits up to 0.5 s; the ServerApp's pull interval)
  F  the server's aggregation (the defense) and evaluation

With one message per client, a node runs its messages one after the other, so A–E repeat per message. A
round's seconds are the time between the ends of consecutive server evaluations; rounds 2.. are averaged
(round 1 also pays for nodes connecting). The simulator's per round: train + aggregate + eval from its
``metrics.csv``. Optionally Flower's simulation engine (Ray, the example app) too.

    .venv/bin/python benchmarks/flower_round_time.py [--rounds 4] [--config PATH] [--nodes 2]
        [--set num_clients=6 --set clients_per_round=6] [--with-simulation]
"""

from __future__ import annotations

import argparse
import csv
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
PHASES = [
    ("A", "Flower: message to node (SuperNode 3 s poll, SuperExec poll)"),
    ("B", "client process start: Python, imports, FAB, app load"),
    ("C", "fedshield set-up in the client process"),
    ("D", "local training (+ torch._dynamo import by the optimizer)"),
    ("E", "Flower: reply to server (node 0.5 s wait, server pull)"),
    ("F", "server: defense + evaluation"),
]


def simulator(config: Path, sets: list[str], work: Path) -> tuple[list[float], float]:
    out = work / "sim-run"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fedshield", "run", str(config), *(a for s in sets for a in ("--set", s)),
                    "--out", str(out), "--quiet"], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [float(r["train_s"]) + float(r["aggregate_s"]) + float(r.get("eval_s") or 0) for r in rows], wall


def deployment(config: Path, sets: list[str], nodes: int, work: Path, after: bool) -> tuple[list[float], list[dict[str, float]], float]:
    """Per-round seconds and per-round phase split of ``fedshield federate`` (Python API, same code path)."""
    from fedshield.config import load_config
    from fedshield.flower.federate import federate

    out = work / ("federate-after" if after else "federate-before")
    cfg = load_config(config, sets)
    rounds = cfg.rounds
    t0 = time.perf_counter()
    federate(cfg, out, nodes=nodes, reply_poll=0.1 if after else 3.0, batch_clients=after, log=lambda _line: None)
    wall = time.perf_counter() - t0
    events = [json.loads(line) for line in (out / "flower" / "rounds.jsonl").read_text().splitlines()]
    ends = {e["round"]: e["time"] for e in events if e["event"] == "evaluate"}
    per_round = [ends[t] - ends[t - 1] for t in range(1, rounds + 1)]
    evals = {e["round"]: e.get("eval_s", 0.0) for e in events if e["event"] == "evaluate"}
    phases = []
    for e in (e for e in events if e["event"] == "round"):
        slowest = max(e["clients"], key=lambda c: c["t_trained"])
        sent = e["t_sent"]
        phases.append({
            "A": slowest["t_process"] - sent,
            "B": slowest["t_handler"] - slowest["t_process"],
            "C": slowest["t_setup"] - slowest["t_handler"],
            "D": slowest["t_trained"] - slowest["t_setup"],
            "E": e["t_received"] - slowest["t_trained"],
            "F": e["aggregate_s"] + evals.get(e["round"], 0.0),
        })
    return per_round, phases, wall


def flower_simulation(rounds: int, work: Path) -> tuple[list[float], float]:
    from fedshield.flower.federation import run_simulation

    log = work / "flwr-sim.jsonl"
    t0 = time.perf_counter()
    p = run_simulation(APP, work / "flwr-sim", {"num-server-rounds": rounds, "log-file": str(log)}, timeout=600)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"flwr run (simulation) failed:\n{p.stdout[-3000:]}")
    ends = [e["time"] for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "evaluate"]
    return [b - a for a, b in zip(ends, ends[1:])], wall


def later(per_round: list[float]) -> float:
    return statistics.mean(per_round[1:] or per_round)


def line(name: str, per_round: list[float], wall: float) -> str:
    return (f"{name:<34} round 1: {per_round[0]:6.2f} s   rounds 2..{len(per_round)}: {later(per_round):6.2f} s/round"
            f"   whole command: {wall:6.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                    help="config overrides (default: num_clients=6, clients_per_round=6)")
    ap.add_argument("--with-simulation", action="store_true", help="also Flower's simulation engine (Ray, ~2 GB)")
    args = ap.parse_args()
    sets = (args.set if args.set is not None else ["num_clients=6", "clients_per_round=6"]) + [f"rounds={args.rounds}"]
    print(f"config {args.config} {' '.join(sets)}, {args.nodes} nodes, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="fedshield-flower-bench-") as tmp:
        work = Path(tmp)
        sim, sim_wall = simulator(args.config, sets, work)
        lines = [line("fedshield run (in-process)", sim, sim_wall)]
        print(lines[-1], flush=True)
        results = {}
        for after, name in ((False, "federate before (per client, 3 s)"), (True, "federate after (per node, 0.1 s)")):
            per_round, phases, wall = deployment(args.config, sets, args.nodes, work, after)
            results[name] = (per_round, phases)
            lines.append(line(name, per_round, wall))
            print(lines[-1], flush=True)
        if args.with_simulation:
            per_round, wall = flower_simulation(args.rounds, work)
            lines.append(line("Flower simulation engine (Ray)", per_round, wall))
            print(lines[-1], flush=True)
    print(f"load average now {os.getloadavg()[0]:.1f}")
    print("\nwhere a deployed round goes (slowest client; mean of rounds 2..):")
    print(f"{'':62}{'before':>14}{'after':>14}")
    for key, label in PHASES:
        cells = [statistics.mean(ph[key] for ph in (phases[1:] or phases)) for _, phases in results.values()]
        print(f"  {key}  {label:<57}" + "".join(f"{c:12.2f} s" for c in cells))
    for name, (per_round, _) in results.items():
        print(f"  {name}: {later(per_round):.2f} s/round = {later(per_round) / later(sim):.1f}x the in-process "
              f"round ({later(sim):.2f} s)")
    print("\nsummary:\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
