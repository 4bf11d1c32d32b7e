"""Seconds per round and peak memory for large client populations: 100 / 1,000 / 10,000 clients × 10 / 50 / 100
clients per round, on Fashion-MNIST (60,000 training images split IID).

Clients hold no data of their own: a partition is one int64 index tensor per client into the one training
tensor (60,000 indices in all, whatever the number of clients), and a selected client's images are gathered
by index when it trains, then dropped. So memory must stay flat as the population grows, and the time per
round must depend on the clients per round and their data, not on the population.

Every setting runs in a fresh process (so peak RSS is its own): build the run (load data, partition, model,
evaluator), then ``--rounds`` rounds of ``run_round`` (the first reported apart: it pays one-off kernel set-up
for the batch shapes) (FedAvg, ``--epochs`` local epochs, batch 64, one
thread, no evaluation and no output files), and report set-up seconds, seconds per round (median) and the
process's peak RSS (``ru_maxrss``). Settings run one after another, so load on the machine affects them alike
only on a quiet machine; compare the per-sample column.

    python benchmarks/population_scale.py [--quick] [--model small_cnn] [--rounds 3] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def child(clients: int, per_round: int, model: str, rounds: int, epochs: int) -> dict:
    import torch

    from fedshield.config import config_from_dict
    from fedshield.sim import build_setup
    from fedshield.sim.loop import run_round
    from fedshield.sim.state import RoundState

    torch.set_num_threads(1)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = config_from_dict({
        "name": f"population-{clients}-{per_round}", "seed": 0, "model": model, "num_clients": clients,
        "clients_per_round": per_round, "rounds": rounds, "workers": 1, "threads": 1,
        "data": {"dataset": "fashion_mnist", "partition": "iid", "normalize": "none"},
        "train": {"lr": 0.01, "momentum": 0.9, "epochs": epochs, "batch_size": 64},
        "defense": {"name": "fedavg"}, "eval": {"every": rounds, "test_subset": 1000},
    })
    t0 = time.perf_counter()
    setup = build_setup(cfg)
    t_setup = time.perf_counter() - t0
    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    state = RoundState(0, setup.start.clone(), setup.new_defense())
    per_round_s = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        params, row = run_round(setup, state)
        state.advance(params, row, 0.0)
        per_round_s.append(time.perf_counter() - t0)
    first, rest = per_round_s[0], per_round_s[1:] or per_round_s
    index_bytes = sum(p.numel() * p.element_size() for p in setup.client_indices)
    return {
        "clients": clients, "per_round": per_round, "setup_s": t_setup, "round_s": statistics.median(rest), "first_round_s": first,
        "samples_per_round": per_round * len(setup.dataset.train_y) // clients,
        "rss_before_mb": rss0 / 1024, "rss_after_setup_mb": rss_setup / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "partition_index_mb": index_bytes / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--per-round", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--rounds", type=int, default=3, help="the first is reported apart (one-off kernel set-up)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="10,000 clients × 100 per round and 100 × 10 only")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        c, m = map(int, args.child.split(","))
        print("RESULT " + json.dumps(child(c, m, args.model, args.rounds, args.epochs)), flush=True)
        return
    settings = [(100, 10), (10000, 100)] if args.quick else [(c, m) for c in args.clients for m in args.per_round if m <= c]
    print(f"model {args.model}, {args.rounds} rounds of {args.epochs} local epoch(s), one thread, FedAvg")
    print("| clients | per round | samples/round | set-up (s) | first round (s) | s/round after | ms/sample | "
          "peak RSS (MB) | RSS after set-up (MB) | partition indices (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c, m in settings:
        cmd = [sys.executable, __file__, "--child", f"{c},{m}", "--model", args.model, "--rounds", str(args.rounds),
               "--epochs", str(args.epochs)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not lines:
            print(f"| {c} | {m} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode} |")
            continue
        r = json.loads(lines[0][7:])
        print(f"| {c} | {m} | {r['samples_per_round']} | {r['setup_s']:.2f} | {r['first_round_s']:.2f} | {r['round_s']:.2f} | "
              f"{1000 * r['round_s'] / max(1, r['samples_per_round'] * args.epochs):.3f} | {r['peak_rss_mb']:.0f} | "
              f"{r['rss_after_setup_mb']:.0f} | {r['partition_index_mb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
