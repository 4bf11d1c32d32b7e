"""Replay one round from a finished run and show what the defense saw.

    python scripts/replay_round.py RUN_DIR [--round T]

Trains round T's clients (default: the round after the last one) from the run's final global model, exactly as
the run would have (same seeded selection and per-client streams), runs the run's defense on their updates,
and prints one line per client: attacker or not, local dataset size, update norm, mean cosine distance to the
other clients computed on the full local models (global + update, what the Fedward authors' FLAME clusters) and
on the updates (what FLAME's paper clusters), and whether the defense admitted it.

Used for docs/results/fedward_table1_fmnist.md ("which attacker FLAME admits"); works for any run folder with
``config.yaml`` and ``final_model.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from sklearn.metrics.pairwise import cosine_distances

from fedshield.config import load_config
from fedshield.core.numeric import median
from fedshield.core.seeding import torch_stream
from fedshield.defenses import RoundInput
from fedshield.sim import build_setup
from fedshield.sim.loop import select_clients, train_clients


def replay(run_dir: Path, round_: int | None = None) -> list[dict]:
    cfg = load_config(run_dir / "config.yaml")
    final = run_dir / "final_model.pt"
    if not final.exists():
        raise SystemExit(f"{run_dir}: no final_model.pt (the run has not finished)")
    setup = build_setup(cfg)
    g = torch.load(final, weights_only=True)["global_params"]
    t = round_ if round_ is not None else cfg.rounds + 1
    selected = select_clients(cfg, setup.attackers, t)
    updates, malicious, sizes = train_clients(setup, g, selected, t)
    u = torch.stack(updates)
    agg = setup.new_defense().aggregate(RoundInput(
        global_params=g, updates=u, layout=setup.layout, round=t, client_ids=selected,
        num_samples=torch.tensor(sizes, dtype=torch.float32), generator=torch_stream(cfg.seed, "defense", t)))
    n = len(selected)
    d_models = cosine_distances((g[None] + u).double().numpy())
    d_updates = cosine_distances(u.double().numpy())
    return [{"client": c, "attacker": bool(malicious[i]), "samples": int(sizes[i]), "norm": float(u[i].norm()),
             "dist_models": float(d_models[i].sum() / (n - 1)), "dist_updates": float(d_updates[i].sum() / (n - 1)),
             "admitted": bool(agg.accepted[i])} for i, c in enumerate(selected)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--round", type=int, default=None, help="the round to replay (default: the one after the last)")
    args = ap.parse_args(argv)
    rows = replay(args.run_dir, args.round)
    print("client  attacker  samples  |update|  mean cos. distance: models (x1e-4)  updates  admitted")
    s_t = float(median(torch.tensor([r["norm"] for r in rows], dtype=torch.float64)))
    print(f"median update norm over the {len(rows)} clients (FLAME's clipping bound S_t): {s_t:.3f}")
    for r in rows:
        print(f"{r['client']:6d}  {'yes' if r['attacker'] else 'no':>8}  {r['samples']:7d}  {r['norm']:8.3f}  "
              f"{r['dist_models'] * 1e4:34.1f}  {r['dist_updates']:7.3f}  {'yes' if r['admitted'] else 'no':>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
