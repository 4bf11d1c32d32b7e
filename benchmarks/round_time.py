"""Seconds per round of the simulator's local training against a plain reference loop, in one run.

Setting 1 of issue 2: Fashion-MNIST, 100 clients (600 samples each), 10 per round, lenet, 2 local epochs,
SGD lr 0.01 momentum 0.9, batch 64. The reference is the loop most FL code writes: a deep copy of the model
per client and a DataLoader over a TensorDataset, in the default memory format. All see the same data
order (the same per-client permutations). Two fedshield variants are timed: the default (channels_last, clients
trained side by side by single-threaded workers; both round differently, so updates drift apart over the local
steps) and one with the reference's arithmetic (default memory format, one worker), whose updates must agree
to float precision.

    .venv/bin/python benchmarks/round_time.py [--rounds 3] [--workers N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fedshield.config import load_config
from fedshield.models import flatten_params, load_flat_params
from fedshield.sim import build_setup, select_clients
from fedshield.sim.train import ParallelTrainer
from fedshield.core.seeding import torch_stream


def reference_train(base_model, global_params, x, y, s, gen):
    """Plain loop: deep copy of the model, DataLoader over a TensorDataset, fresh SGD."""
    model = copy.deepcopy(base_model)
    load_flat_params(model, global_params)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    perms = [torch.randperm(len(x), generator=gen) for _ in range(s.epochs)]  # the order the fast path uses
    for perm in perms:
        batches = [perm[i : i + s.batch_size].tolist() for i in range(0, len(x), s.batch_size)]
        for xb, yb in DataLoader(TensorDataset(x, y), batch_sampler=batches):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    return flatten_params(model) - global_params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/fmnist_fedavg.yaml")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="override the config's workers")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (one-off kernel set-up)")
    args = ap.parse_args()
    cfg = load_config(args.config, [f"workers={args.workers}"] if args.workers else [])
    setup = build_setup(cfg)
    base_model = setup.model_fn()
    variants = {
        "fedshield (channels_last, default)": setup.trainer,
        # one worker on the main thread's threads, no channels_last: exactly the reference's arithmetic
        "fedshield, reference arithmetic": ParallelTrainer(setup.model_fn, 1, channels_last=False),
    }
    times: dict[str, list[float]] = {name: [] for name in [*variants, "reference"]}
    rel: dict[str, float] = {name: 0.0 for name in variants}
    params = setup.initial_params.clone()
    for r in range(1 - args.warmup, args.rounds + 1):
        clients = select_clients(cfg, [], max(r, 1))
        gen = lambda c: torch_stream(cfg.seed, "train", max(r, 1), c)  # noqa: E731
        ups: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        ups["reference"] = torch.stack(
            [reference_train(base_model, params, *setup.client_data(c), setup.benign_settings, gen(c)) for c in clients]
        )
        times["reference"].append(time.perf_counter() - t0)
        for name, trainer in variants.items():  # the simulator's own path: run_round calls exactly this
            jobs = [(*setup.client_data(c), setup.benign_settings, gen(c), None) for c in clients]
            t0 = time.perf_counter()
            ups[name] = torch.stack(trainer.train_many(params, jobs))
            times[name].append(time.perf_counter() - t0)
        if r < 1:
            for v in times.values():
                v.clear()
            continue
        ref = ups["reference"]
        for name in variants:
            rel[name] = max(rel[name], float(((ups[name] - ref).norm(dim=1) / ref.norm(dim=1)).max()))
        params = params + ref.mean(0)
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    ref_t = statistics.median(times["reference"])
    print(f"setting: {args.config}, {cfg.clients_per_round} clients/round, model {cfg.model}, "
          f"batch {cfg.train.batch_size}, {cfg.train.epochs} epochs, workers={cfg.workers}, "
          f"intra-op threads={torch.get_num_threads()}")
    print(f"reference (deep copy per client, DataLoader over TensorDataset): {ref_t:.3f} s per round (median)")
    for name in variants:
        t = statistics.median(times[name])
        print(f"{name}: {t:.3f} s per round, speed-up {ref_t / t:.2f}x; "
              f"max relative L2 difference of the updates from the reference {rel[name]:.1e}")
    # Without channels_last and on the reference's threads, fedshield does the reference's arithmetic, so its
    # updates must agree to float precision; channels_last convolutions and single-threaded workers round
    # differently, and that drift grows over the local SGD steps with momentum.
    ok = rel["fedshield, reference arithmetic"] <= 1e-6
    print(f"reference arithmetic, same data order: updates {'EQUAL' if ok else 'NOT EQUAL'} within 1e-6 relative")


if __name__ == "__main__":
    main()
