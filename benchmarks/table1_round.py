"""One Fedward Table I attacked round in fedshield and in a plain PyTorch loop of the same arithmetic, in one run.

The round (configs/fedward_table1_fmnist_base.yaml, the first attacked round): lenet on Fashion-MNIST, 100
IID clients of 600 images, 10 per round: 6 benign clients (2 epochs, SGD lr 0.01, momentum 0.9, weight decay
5e-4) and the 4 DBA attackers (5 epochs, lr 0.05, MultiStepLR ×0.1 after epochs 1 and 4, i.e. at 0.2E and
0.8E; each batch of 64 has its first ``poison_per_batch`` = 20 images stamped with the attacker's local DBA
trigger and relabelled 2), batch 64, one thread (as in a sweep with two runs side by side).

* ``fedshield``: ``fedshield.sim.train_clients``, the simulator's own path (attack plan, per-batch poisoner,
  the trainer), with fedshield's C kernels where they can be built (docs/performance.md, "Kernels").
* ``fedshield, PyTorch ops``: the same with ``fast_kernels=False`` (PyTorch's operations and the for-loop SGD),
  timed in the same loop, to show what the kernels add.
* ``plain loop``: what FL code usually writes: a deep copy of the model per client, a DataLoader over a
  TensorDataset, ``torch.optim.lr_scheduler.MultiStepLR`` stepped per epoch, the trigger stamped on a copy
  of each batch, default memory format. It walks the same per-epoch permutations (the same generators).

The two are run alternately, client by client, for ``--rounds`` rounds after one untimed warm-up round, so
both see the same machine load; the medians of the wall time and of the process's CPU time (one thread: the
work itself, far less disturbed by other jobs on the machine) and their ratios are printed.

Equality (untimed, on the last round's updates), in two parts:

1. Exact. fedshield runs its convolutions in channels_last, the plain loop in the default memory format. With
   PyTorch's operations and in the same format, the two give the same updates bit for bit: the plain loop with
   its model and batches in channels_last against fedshield's trainer (``fast_kernels=False``), and that
   trainer in the default format against the plain loop. So the data order, triggers, labels, learning rates,
   momentum and weight decay are the same arithmetic; a single wrong value changes bits. The kernels' own
   distance from that trainer (rounding only: other summation orders in the backward kernels, the fused SGD step) is
   printed too.
2. Float tolerance across the formats. There only the convolutions' rounding differs, and up to 50 momentum
   steps through max-pools and ReLUs amplify it chaotically: a client either keeps its float32 rounding error
   at about 1e-5 (relative L2 of the update) or has one near-tie of a max-pool or ReLU decided the other way and
   drifts to 1e-4 .. 1e-2. This noise floor is measured in the same run by the plain loop in float64
   (``--noise-rounds N`` adds the clients of N more rounds): each float32 run's distance
   ‖Δ_32 − Δ_64‖ / ‖Δ_64‖ to it. Over 140 clients (``--noise-rounds 13``: the attacked rounds 6 to 19 from
   the same global model, seed 0) the plain loop's own distances and fedshield's had the same distribution:
   median 1.2e-5 and 1.8e-5, largest 1.2e-2 for both. The two float32 runs may each be that far off, in
   opposite directions, so the bound on ‖Δ_fedshield − Δ_plain‖ / ‖Δ_plain‖ (max over the round's clients) is
   TOLERANCE = 2.5e-2, twice the largest float32 noise measured, rounded up. No bound relative to the same
   round's noise is sound: over one round's ten clients the largest fedshield distance was 0.8 to 10 times the
   largest plain-loop distance (six rounds), depending on which client happened to flip a decision. The bound
   documents the noise; it is not what finds mistakes. In one attacker's update, weight decay left out gives
   2.9e-2, 19 instead of 20 poisoned images 9.6e-2, lr 0.045 instead of 0.05 0.12, another DBA part 0.11,
   another data order 0.34: some of these could hide in the noise of a client that flipped; part 1 catches
   each of them exactly.

Evaluation: one evaluation of MA (10,000 test images) and BA (the 9,000 non-target test images with the
global trigger) is timed too, and its share of a round that evaluates every round is printed.

    python benchmarks/table1_round.py [--quick] [--rounds 3] [--threads 1] [--noise-rounds 0]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from fedshield.config import load_config
from fedshield.models import load_flat_params
from fedshield.sim import build_setup, select_clients
from fedshield.sim.loop import train_clients
from fedshield.sim.train import ParallelTrainer
from fedshield.sim.setup import global_trigger
from fedshield.core.seeding import torch_stream

TOLERANCE = 2.5e-2  # across memory formats: twice the largest float32 noise measured (see the module docstring)


def plain_client(base_model, global_params, x, y, s, gen, trigger_mask=None, target=0, k=0, dtype=torch.float32,
                 memory_format=torch.contiguous_format):
    """The usual loop for one client; an attacker stamps ``trigger_mask`` on the first k images of each batch.

    ``dtype=torch.float64`` runs the same loop in double precision (the reference of the equality check), and
    ``memory_format=torch.channels_last`` in fedshield's memory format. The update is returned in ``dtype``."""
    model = copy.deepcopy(base_model).to(dtype=dtype, memory_format=memory_format)
    load_flat_params(model, global_params)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    milestones = sorted({math.ceil(m * s.epochs - 1e-9) for m in s.milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=s.gamma)
    ds = TensorDataset(x.to(dtype), y)
    for _ in range(s.epochs):
        perm = torch.randperm(len(x), generator=gen)
        batches = [perm[i : i + s.batch_size].tolist() for i in range(0, len(x), s.batch_size)]
        for xb, yb in DataLoader(ds, batch_sampler=batches):
            if trigger_mask is not None:
                xb, yb = xb.clone(), yb.clone()
                xb[:k, :, trigger_mask] = 1.0
                yb[:k] = target
            xb = xb.contiguous(memory_format=memory_format)
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        sched.step()
    flat = torch.cat([t.detach().reshape(-1) for t in model.state_dict().values() if t.is_floating_point()])
    return flat - global_params.to(dtype)


def relative_errors(updates: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    """(clients,) float64: ‖Δ − Δ_ref‖ / ‖Δ_ref‖ of each client, computed in float64."""
    u = torch.stack([d.double() for d in updates])
    r = torch.stack([d.double() for d in reference])
    return (u - r).norm(dim=1) / r.norm(dim=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/fedward_table1_fmnist_base.yaml")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pdr", type=int, default=20, help="poisoned images per batch of 64 (10, 20 or 30 in Table I)")
    ap.add_argument("--quick", action="store_true", help="one timed round each, no evaluation timing")
    ap.add_argument("--noise-rounds", type=int, default=0,
                    help="also measure the float32 noise (distance to float64) on the clients of this many more rounds")
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

    # fedshield with PyTorch's plain arithmetic (no C kernels, no fused SGD): what the kernels add
    torch_ops = replace(setup, trainer=ParallelTrainer(setup.model_fn, 1, cfg.device, fast_kernels=False))

    def fedshield_torch_ops_client(c):
        return train_clients(torch_ops, params, [c], rnd)[0][0]

    def plain_client_of(c, dtype=torch.float32, memory_format=torch.contiguous_format, round_=rnd):
        x, y = setup.client_data(c)
        gen = torch_stream(cfg.seed, "train", round_, c)
        if c in setup.attacker_rank:
            mask = trig.part(setup.attacker_rank[c]).mask(h, w)
            return plain_client(base_model, params, x, y, setup.attack_settings, gen, mask,
                                cfg.attack.target_label, cfg.attack.poison_per_batch, dtype, memory_format)
        return plain_client(base_model, params, x, y, setup.benign_settings, gen, dtype=dtype,
                            memory_format=memory_format)

    # Interleaved per client (plain, fedshield, plain, ...), so both see the same load; wall time and the
    # process's CPU time (one thread: the work itself, much less sensitive to other jobs on the machine).
    variants = {"plain loop": plain_client_of, "fedshield": fedshield_client}
    if setup.trainer.main.fast_kernels:
        variants["fedshield, PyTorch ops"] = fedshield_torch_ops_client
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
    # Equality (untimed). Exact: with PyTorch's operations and in the same memory format, fedshield's trainer and
    # the plain loop are the same arithmetic, bit for bit (data order, triggers, labels, lr, momentum, decay).
    plain_cl = [plain_client_of(c, memory_format=torch.channels_last) for c in selected]
    fs_torch_cl = [fedshield_torch_ops_client(c) for c in selected]
    default_format = replace(setup, trainer=ParallelTrainer(setup.model_fn, 1, cfg.device, channels_last=False,
                                                            fast_kernels=False))
    fs_default = [train_clients(default_format, params, [c], rnd)[0][0] for c in selected]
    exact = all(map(torch.equal, fs_torch_cl, plain_cl)) and all(map(torch.equal, fs_default, ups["plain loop"]))
    # The kernels (backward passes from the pooled gradient, fused SGD) change only the rounding: their distance to the
    # same trainer with PyTorch's operations, in the same memory format.
    kernel_dist = float(relative_errors(ups["fedshield"], fs_torch_cl).max())
    # Float: across the formats only the rounding differs; the float64 loop says how far each float32 run is from
    # the exact result (the float32 noise of the training itself).
    c0 = time.process_time()
    ref64 = [plain_client_of(c, torch.float64) for c in selected]
    t64 = time.process_time() - c0
    err_plain = relative_errors(ups["plain loop"], ref64)
    err_fs = relative_errors(ups["fedshield"], ref64)
    between = float(relative_errors(ups["fedshield"], ups["plain loop"]).max())
    noise_plain, noise_fs = [err_plain], [err_fs]
    for r in range(rnd + 1, rnd + 1 + args.noise_rounds):
        sel = select_clients(cfg, setup.attackers, r)
        ref = [plain_client_of(c, torch.float64, round_=r) for c in sel]
        noise_plain.append(relative_errors([plain_client_of(c, round_=r) for c in sel], ref))
        noise_fs.append(relative_errors(train_clients(setup, params, sel, r)[0], ref))
    n_att = sum(c in setup.attacker_rank for c in selected)
    print(f"setting: {args.config}, {len(selected) - n_att} benign x {cfg.train.epochs} epochs + {n_att} attackers x "
          f"{cfg.attack.train.epochs} epochs, {cfg.attack.poison_per_batch}/64 poisoned, {args.threads} thread(s)")
    print(f"fedshield's C kernels: {'ON' if setup.trainer.main.fast_kernels else 'OFF (PyTorch operations only)'}")
    for label, tt in (("wall", wall), ("CPU", cpu)):
        t_plain, t_fs = statistics.median(tt["plain loop"]), statistics.median(tt["fedshield"])
        extra = ""
        if "fedshield, PyTorch ops" in tt:
            t_ops = statistics.median(tt["fedshield, PyTorch ops"])
            extra = f" (with PyTorch's operations only: {t_ops:.2f} s, {t_plain / t_ops:.2f}x)"
        print(f"{label:4s} time per attacked round (median of {args.rounds}): plain loop {t_plain:.2f} s, "
              f"fedshield {t_fs:.2f} s, {t_plain / t_fs:.2f}x the plain loop{extra}")
    t_fs = statistics.median(cpu["fedshield"])
    print(f"updates, fedshield with PyTorch's operations vs the plain loop in the same memory format (both in "
          f"channels_last, both in the default format), all {len(selected)} clients: "
          f"{'bit for bit EQUAL' if exact else 'DIFFERENT'}")
    print(f"updates, fedshield with its kernels vs with PyTorch's operations (same format): relative L2 distance "
          f"{kernel_dist:.1e} (max over the clients; float rounding only)")
    print(f"updates, relative L2 distance to the float64 loop's, max over the {len(selected)} clients: plain loop "
          f"{float(err_plain.max()):.1e}, fedshield {float(err_fs.max()):.1e}; fedshield vs plain loop {between:.1e} "
          f"(float64 loop: {t64:.1f} s CPU, untimed)")
    if args.noise_rounds:
        pooled_plain, pooled_fs = torch.cat(noise_plain), torch.cat(noise_fs)
        print(f"float32 noise over {len(pooled_plain)} clients ({args.noise_rounds + 1} rounds): distance to float64 "
              f"max {float(pooled_plain.max()):.1e} / median {float(pooled_plain.median()):.1e} (plain loop), "
              f"max {float(pooled_fs.max()):.1e} / median {float(pooled_fs.median()):.1e} (fedshield)")
    ok = exact and between <= TOLERANCE
    print(f"equality: {'PASS' if ok else 'FAIL'} (bit for bit in the same memory format, and across the formats "
          f"{between:.1e} <= {TOLERANCE:g}, the float32 noise bound)")
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
