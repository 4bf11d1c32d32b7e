"""One Fedward Table I attacked round in fedshield and in a plain PyTorch loop of the same arithmetic, in one run.

The round (configs/fedward_table1_fmnist_base.yaml, the first attacked round): lenet on Fashion-MNIST, 100
IID clients of 600 images, 10 per round: 6 benign clients (2 epochs, SGD lr 0.01, momentum 0.9, weight decay
5e-4) and the 4 DBA attackers (5 epochs, lr 0.05, MultiStepLR ×0.1 after epochs 1 and 4, i.e. at 0.2E and
0.8E; each batch of 64 has its first ``poison_per_batch`` = 20 images stamped with the attacker's local DBA
trigger and relabelled 2), batch 64, one thread (as in a sweep with two runs side by side).

* ``fedshield``: ``fedshield.sim.train_clients``, the simulator's own path (attack plan, per-batch poisoner,
  the trainer).
* ``plain loop``: what FL code usually writes: a deep copy of the model per client, a DataLoader over a
  TensorDataset, ``torch.optim.lr_scheduler.MultiStepLR`` stepped per epoch, the trigger stamped on a copy
  of each batch, default memory format. It walks the same per-epoch permutations (the same generators).

The two are run alternately, client by client, for ``--rounds`` rounds after one untimed warm-up round, so
both see the same machine load; the medians of the wall time and of the process's CPU time (one thread: the
work itself, far less disturbed by other jobs on the machine) and their ratios are printed. Equality: fedshield runs its convolutions in channels_last,
which rounds differently from the default layout, and the difference grows over the local SGD steps (up to
50 with momentum), so the updates agree to a float tolerance, not bitwise: the maximum over clients of
‖Δ_fedshield − Δ_plain‖ / ‖Δ_plain‖ must be ≤ 1e-3 (TOLERANCE; a wrong trigger, label, learning rate or
data order gives differences of order 1).

Evaluation: one evaluation of MA (10,000 test images) and BA (the 9,000 non-target test images with the
global trigger) is timed too, and its share of a round that evaluates every round is printed.

    python benchmarks/table1_round.py [--quick] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fedshield.config import load_config
from fedshield.models import flatten_params, load_flat_params
from fedshield.sim import build_setup, select_clients
from fedshield.sim.loop import train_clients
from fedshield.sim.setup import global_trigger
from fedshield.core.seeding import torch_stream

TOLERANCE = 1e-3


def plain_client(base_model, global_params, x, y, s, gen, trigger_mask=None, target=0, k=0):
    """The usual loop for one client; an attacker stamps ``trigger_mask`` on the first k images of each batch."""
    model = copy.deepcopy(base_model)
    load_flat_params(model, global_params)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    milestones = sorted({math.ceil(m * s.epochs - 1e-9) for m in s.milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=s.gamma)
    ds = TensorDataset(x, y)
    for _ in range(s.epochs):
        perm = torch.randperm(len(x), generator=gen)
        batches = [perm[i : i + s.batch_size].tolist() for i in range(0, len(x), s.batch_size)]
        for xb, yb in DataLoader(ds, batch_sampler=batches):
            if trigger_mask is not None:
                xb, yb = xb.clone(), yb.clone()
                xb[:k, :, trigger_mask] = 1.0
                yb[:k] = target
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        sched.step()
    return flatten_params(model) - global_params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/fedward_table1_fmnist_base.yaml")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pdr", type=int, default=20, help="poisoned images per batch of 64 (10, 20 or 30 in Table I)")
    ap.add_argument("--quick", action="store_true", help="one timed round each, no evaluation timing")
    args = ap.parse_args()
    if args.quick:
        args.rounds = 1
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, ["workers=1", f"threads={args.threads}", f"attack.poison_per_batch={args.pdr}",
                                    "defense.name=fedavg"])
    setup = build_setup(cfg)
    rnd = cfg.attack.start_round
    selected = select_clients(cfg, setup.attackers, rnd)
    params = setup.start.clone()
    base_model = setup.model_fn()
    trig = global_trigger(cfg)  # the DBA trigger; attacker k stamps its part k
    h, w = setup.dataset.train_x.shape[-2:]

    def fedshield_client(c):
        return train_clients(setup, params, [c], rnd)[0][0]

    def plain_client_of(c):
        x, y = setup.client_data(c)
        gen = torch_stream(cfg.seed, "train", rnd, c)
        if c in setup.attacker_rank:
            mask = trig.part(setup.attacker_rank[c]).mask(h, w)
            return plain_client(base_model, params, x, y, setup.attack_settings, gen, mask,
                                cfg.attack.target_label, cfg.attack.poison_per_batch)
        return plain_client(base_model, params, x, y, setup.benign_settings, gen)

    # Interleaved per client (plain, fedshield, plain, ...), so both see the same load; wall time and the
    # process's CPU time (one thread: the work itself, much less sensitive to other jobs on the machine).
    variants = {"plain loop": plain_client_of, "fedshield": fedshield_client}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    ups: dict[str, list[torch.Tensor]] = {k: [] for k in variants}
    for r in range(args.rounds + 1):
        tw = {k: 0.0 for k in variants}
        tc = {k: 0.0 for k in variants}
        for c in selected:
            for name, fn in variants.items():
                w0, c0 = time.perf_counter(), time.process_time()
                u = fn(c)
                tw[name] += time.perf_counter() - w0
                tc[name] += time.process_time() - c0
                if r == args.rounds:
                    ups[name].append(u)
        if r:  # round 0 warms up
            for k in variants:
                wall[k].append(tw[k])
                cpu[k].append(tc[k])
            print(f"round {r}: " + ", ".join(f"{k} {tw[k]:.2f} s wall / {tc[k]:.2f} s CPU" for k in variants), flush=True)
    ref = torch.stack(ups["plain loop"])
    rel = float(((torch.stack(ups["fedshield"]) - ref).norm(dim=1) / ref.norm(dim=1)).max())
    n_att = sum(c in setup.attacker_rank for c in selected)
    print(f"setting: {args.config}, {len(selected) - n_att} benign x {cfg.train.epochs} epochs + {n_att} attackers x "
          f"{cfg.attack.train.epochs} epochs, {cfg.attack.poison_per_batch}/64 poisoned, {args.threads} thread(s)")
    for label, tt in (("wall", wall), ("CPU", cpu)):
        t_plain, t_fs = statistics.median(tt["plain loop"]), statistics.median(tt["fedshield"])
        print(f"{label:4s} time per attacked round (median of {args.rounds}): plain loop {t_plain:.2f} s, "
              f"fedshield {t_fs:.2f} s, {t_plain / t_fs:.2f}x the plain loop")
    t_fs = statistics.median(cpu["fedshield"])
    print(f"updates: max relative L2 difference {rel:.1e} ({'EQUAL' if rel <= TOLERANCE else 'NOT EQUAL'} "
          f"within {TOLERANCE:g})")
    if not args.quick:
        ev = []
        for _ in range(args.rounds):
            c0 = time.process_time()
            setup.evaluator.evaluate(params)
            ev.append(time.process_time() - c0)
        t_ev = statistics.median(ev)
        print(f"evaluation (MA on {len(setup.evaluator.test_y)} + BA on {len(setup.evaluator.bd_y)} images): "
              f"{t_ev:.3f} s CPU = {100 * t_ev / (t_fs + t_ev):.1f} % of a round that evaluates every round")


if __name__ == "__main__":
    main()
