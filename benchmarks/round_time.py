"""Seconds per round of the simulator's local training against a plain reference loop, in one run.

Setting 1 of issue 2: Fashion-MNIST, 100 clients (600 samples each), 10 per round, lenet, 2 local epochs,
SGD lr 0.01 momentum 0.9, batch 64. The reference is the loop most FL code writes: a deep copy of the model
per client and a DataLoader over a TensorDataset, in the default memory format. Both see the same data
order (the same per-client permutations), so their updates must agree within float tolerance.

    .venv/bin/python benchmarks/round_time.py [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fedshield.config import config_from_dict, load_config
from fedshield.models import flatten_params, load_flat_params
from fedshield.sim import build_setup, select_clients
from fedshield.sim.seeding import torch_stream


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
    params = setup.initial_params.clone()
    fast_t: list[float] = []
    ref_t: list[float] = []
    max_diff, max_rel = 0.0, 0.0
    for r in range(1 - args.warmup, args.rounds + 1):
        clients = select_clients(cfg, [], max(r, 1))
        for variant in ("fast", "reference"):
            ups = []
            t0 = time.perf_counter()
            if variant == "fast":  # the simulator's own path: run_round calls exactly this
                jobs = [(*setup.client_data(c), setup.benign_settings, torch_stream(cfg.seed, "train", r, c), None)
                        for c in clients]
                ups = setup.trainer.train_many(params, jobs)
            else:
                for cid in clients:
                    x, y = setup.client_data(cid)
                    gen = torch_stream(cfg.seed, "train", r, cid)
                    ups.append(reference_train(base_model, params, x, y, setup.benign_settings, gen))
            (fast_t if variant == "fast" else ref_t).append(time.perf_counter() - t0)
            if variant == "fast":
                fast_ups = torch.stack(ups)
            else:
                ref_ups = torch.stack(ups)
        if r < 1:
            fast_t.clear(), ref_t.clear()
            continue
        max_diff = max(max_diff, float((fast_ups - ref_ups).abs().max()))
        max_rel = max(max_rel, float(((fast_ups - ref_ups).norm(dim=1) / ref_ups.norm(dim=1)).max()))
        params = params + fast_ups.mean(0)
        print(f"round {r}: fast {fast_t[-1]:.2f} s, reference {ref_t[-1]:.2f} s", flush=True)
    f, ref = statistics.median(fast_t), statistics.median(ref_t)
    print(f"intra-op threads={torch.get_num_threads()} workers={cfg.workers} clients/round={cfg.clients_per_round} model={cfg.model}")
    print(f"median seconds per round: fast {f:.3f}, reference {ref:.3f}; speed-up {ref / f:.2f}x")
    # channels_last convolutions round differently; 20 SGD steps with momentum amplify that to ~1e-3 relative.
    ok = max_rel <= 1e-2
    print(f"updates: max |difference| {max_diff:.2e}, max relative L2 difference {max_rel:.2e} "
          f"({'EQUAL within tolerance 1e-2' if ok else 'NOT EQUAL'})")


if __name__ == "__main__":
    main()
