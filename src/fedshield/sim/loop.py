"""The round loop: select clients, train them, aggregate with the defense, evaluate, record, checkpoint.

Output (docs/architecture.md, "Output of a run"): ``config.yaml``, ``metrics.csv`` (one row per round), ``summary.json``, ``metrics.png``,
``checkpoint.pt`` (rewritten atomically after every round, so a crash loses at most the round in flight) and
``final_model.pt``. ``resume=True`` continues from the checkpoint; because every random stream is keyed by
(seed, round, client), a resumed run produces the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import math
import numbers
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor

from ..attacks import RoundState as AttackRound
from ..config import ConfigError, ExperimentConfig, dump_config
from ..core.numeric import finite_rows
from ..core.seeding import numpy_stream, torch_stream
from ..defenses import Aggregate, RoundInput
from ..metrics import aasr, attacker_admission, detection_counts, flame_rates
from .checkpoint import load_checkpoint, resume_state, save_checkpoint, save_model_file
from .output import atomic_write_text, prepare_out_dir, write_json, write_metrics_csv
from .plot import plot_run
from .post_training import auxiliary_set, run_post_training
from .pretrain import pretrained_params
from .progress import RoundProgress
from .setup import Setup, build_setup, with_start
from .state import RoundState

__all__ = ["select_clients", "train_clients", "run_round", "run_experiment", "summarize", "finite_updates"]


def select_clients(cfg: ExperimentConfig, attackers: list[int], round_: int) -> list[int]:
    """Clients of round ``round_`` (1-based).

    ``attack.selection == "fixed"``: from ``attack.start_round`` on, every attacker joins and the other places
    are drawn from the benign clients (DBA/Fedward); before that, and with ``"sampled"``, ``clients_per_round``
    are drawn uniformly from all clients.
    """
    rng = numpy_stream(cfg.seed, "select", round_)
    m = cfg.clients_per_round
    if attackers and cfg.attack.selection == "fixed" and round_ >= cfg.attack.start_round:
        aset = set(attackers)
        benign = [c for c in range(cfg.num_clients) if c not in aset]
        picked = rng.choice(len(benign), size=m - len(attackers), replace=False)
        return sorted(attackers + [benign[i] for i in picked])
    return sorted(int(c) for c in rng.choice(cfg.num_clients, size=m, replace=False))


def train_clients(
    setup: Setup, global_params: Tensor, selected: list[int], round_: int, previous_global: Optional[Tensor] = None
) -> tuple[list[Tensor], list[bool], list[int]]:
    """Local training of ``selected`` in round ``round_``: (updates, which were malicious, sample counts).

    The one place that decides how a client trains (benign, or the configured attack); the Flower client
    calls it too, so both engines train identically. Attacking clients (from ``attack.start_round``) train on
    what the attack's :meth:`~fedshield.attacks.Attack.plan` gives them (data, per-batch poisoner, training
    hooks) and then pass their update through ``after_training``. An omniscient attack (Fang et al.) lets the
    benign clients train first and crafts the attackers' updates from theirs. All randomness comes from
    per-(round, client) streams, so results do not depend on order, workers or resumption.
    ``previous_global`` is the model round ``round_ - 1`` started from (None in round 1 or when unknown): what
    attacks that estimate the benign update from the last global change (Neurotoxin) read.
    """
    cfg = setup.cfg
    attack = setup.attack
    attacking = attack is not None and round_ >= cfg.attack.start_round
    malicious = [attacking and cid in setup.attacker_rank for cid in selected]
    sizes = [len(setup.client_indices[cid]) for cid in selected]
    state = None
    if any(malicious):
        state = AttackRound(
            round=round_,
            global_params=global_params,
            previous_global=previous_global,
            selected=list(selected),
            attackers=[c for c, bad in zip(selected, malicious) if bad],
            layout=setup.layout,
            seed=cfg.seed,
            sizes=dict(zip(selected, sizes)),
            stream=lambda purpose, cid: torch_stream(cfg.seed, "attack", purpose, round_, cid),
        )
    if state is not None and attack.omniscient and all(malicious):  # type: ignore[union-attr]
        raise ConfigError(
            f"attack {cfg.attack.name!r} crafts its updates from the round's benign updates, but every client "
            f"selected in round {round_} is an attacker ({list(selected)}); raise clients_per_round or lower "
            "attack.num_attackers"
        )
    jobs: list[tuple] = []
    for cid, bad in zip(selected, malicious):
        gen = torch_stream(cfg.seed, "train", round_, cid)
        if bad and attack.omniscient:  # type: ignore[union-attr]
            continue
        x, y = setup.client_data(cid)
        if bad:
            plan = attack.plan(cid, setup.attacker_rank[cid], x, y, state)  # type: ignore[union-attr]
            if plan.hooks is None:
                jobs.append((plan.x, plan.y, setup.attack_settings, gen, plan.poisoner))
            else:
                jobs.append((plan.x, plan.y, setup.attack_settings, gen, plan.poisoner, plan.hooks))
        else:
            jobs.append((x, y, setup.benign_settings, gen, None))
    trained = iter(setup.trainer.train_many(global_params, jobs))

    updates: list[Tensor] = []
    if state is not None and attack.omniscient:  # type: ignore[union-attr]
        benign = [next(trained) for bad in malicious if not bad]
        crafted = iter(attack.craft(torch.stack(benign), state))  # type: ignore[union-attr]
        it_b = iter(benign)
        updates = [next(crafted) if bad else next(it_b) for bad in malicious]
    else:
        for cid, bad in zip(selected, malicious):
            u = next(trained)
            if bad:
                u = attack.after_training(u, cid, setup.attacker_rank[cid], state)  # type: ignore[union-attr]
            updates.append(u)
    return updates, malicious, sizes


def run_round(setup: Setup, state: RoundState) -> tuple[Tensor, dict[str, Any]]:
    """Round ``state.round + 1`` from ``state``: the new global parameters and the round's metrics row (no
    evaluation). ``state.defense`` keeps its history; ``state`` itself is advanced by the caller."""
    cfg = setup.cfg
    round_ = state.round + 1
    global_params = state.global_params
    t0 = time.perf_counter()
    selected = select_clients(cfg, setup.attackers, round_)
    updates, malicious, sizes = train_clients(setup, global_params, selected, round_, state.previous_global)
    t1 = time.perf_counter()
    stacked = torch.stack(updates)
    keep = finite_updates(stacked, selected, round_)
    inp = RoundInput(
        global_params=global_params,
        updates=stacked[keep],
        layout=setup.layout,
        round=round_,
        client_ids=[c for c, k in zip(selected, keep.tolist()) if k],
        num_samples=torch.tensor(sizes, dtype=torch.float32)[keep],
        generator=torch_stream(cfg.seed, "defense", round_),
    )
    agg = state.defense.aggregate(inp)
    t2 = time.perf_counter()
    mal = torch.tensor(malicious, dtype=torch.bool)
    accepted = torch.zeros(len(selected), dtype=torch.bool)
    accepted[keep] = agg.accepted.cpu()
    agg = Aggregate(agg.global_params, accepted, agg.info)
    counts = detection_counts(agg.accepted, mal)
    row: dict[str, Any] = {
        "round": round_,
        "ma": float("nan"),
        "ba": float("nan"),
        "selected": len(selected),
        "malicious": int(mal.sum()),
        "accepted": int(agg.accepted.sum()),
        **counts,
        **{k: round(v, 4) for k, v in flame_rates(**counts).items() if k.startswith("flame_")},
        "train_s": round(t1 - t0, 4),
        "aggregate_s": round(t2 - t1, 4),
        # the clients the defense left out, by id (as the Flower server's rows record them); dropped ones apart
        "rejected_clients": " ".join(str(c) for c, a, k in zip(selected, accepted.tolist(), keep.tolist())
                                     if k and not a),
        "malicious_clients": " ".join(str(c) for c, bad in zip(selected, malicious) if bad),
    }
    if not bool(keep.all()):
        dropped = [c for c, k in zip(selected, keep.tolist()) if not k]
        row["dropped"] = len(dropped)
        row["dropped_clients"] = " ".join(str(c) for c in dropped)
        row["dropped_reason"] = f"non-finite (NaN/Inf) updates from client(s) {dropped}; not aggregated"
    row.update({f"info.{k}": _info_value(v) for k, v in agg.info.items()})
    return agg.global_params, row


def finite_updates(updates: Tensor, client_ids: list[int], round_: int) -> Tensor:
    """(n,) bool: which updates are finite. A non-finite update (an attack, or a client whose training
    diverged) is dropped and recorded in the round's metrics row, as the Flower server drops such replies;
    when every update of the round is non-finite nothing can be aggregated: ``ValueError`` naming the clients."""
    keep = finite_rows(updates)
    if not bool(keep.any()):
        raise ValueError(f"round {round_}: every update is non-finite (NaN/Inf), clients {client_ids}: local training "
                         "diverged; lower train.lr (or attack.train.lr) or check the attack's parameters")
    return keep


def _info_value(v: Any) -> Any:
    """A defense's info value as a metrics cell: numbers as float, anything else as text."""
    return float(v) if isinstance(v, numbers.Real) else (v if isinstance(v, str) else str(v))


def summarize(
    cfg: ExperimentConfig, rows: list[dict[str, Any]], seconds: float, samples: Optional[Mapping[int, int]] = None
) -> dict[str, Any]:
    """The run's summary: final MA/BA, AASR, detection totals, time per phase, and which attackers the defense
    admitted (``attackers``: :func:`fedshield.metrics.attacker_admission` over the rows' ``malicious_clients``
    and ``rejected_clients``, with each attacker's dataset size from ``samples``)."""
    evaluated = [r for r in rows if not math.isnan(r["ma"])]
    last = evaluated[-1] if evaluated else {"ma": float("nan"), "ba": float("nan")}
    totals = {k: sum(int(r[k]) for r in rows) for k in ("tp", "fp", "tn", "fn")}
    mal_sent = totals["tp"] + totals["fn"]
    ben_sent = totals["tn"] + totals["fp"]
    start = cfg.attack.start_round if cfg.attack.name != "none" else 1
    return {
        "name": cfg.name,
        "seed": cfg.seed,
        "defense": cfg.defense.name,
        "attack": cfg.attack.name,
        "rounds_done": len(rows),
        "final_ma": last["ma"],
        "final_ba": last["ba"],
        "aasr": aasr({r["round"]: r["ba"] for r in evaluated}, start),
        "malicious_accepted_share": totals["fn"] / mal_sent if mal_sent else float("nan"),
        "benign_accepted_share": totals["tn"] / ben_sent if ben_sent else float("nan"),
        **totals,
        **flame_rates(**totals),
        "train_s": round(sum(r["train_s"] for r in rows), 2),
        "aggregate_s": round(sum(r["aggregate_s"] for r in rows), 2),
        "eval_s": round(sum(r.get("eval_s", 0.0) for r in rows), 2),
        "seconds": round(seconds, 2),
        # rounds whose aggregate was non-finite: the defense kept the previous model (metrics.csv info.refused_reason)
        "refused_rounds": sum(1 for r in rows if r.get("info.refused") == 1.0),
        **{f"final_{k}": last[k] for k in ("detection_rate", "fpr", "f1") if k in last},
        "domain": "traffic" if cfg.data.is_traffic else "image",
        "attackers": admission_from_rows(rows, samples),
        # the noise level FLAME used (0.01 on traffic)
        **({"defense_lam": rows[-1]["info.lam"]} if rows and "info.lam" in rows[-1] else {}),
    }


def admission_from_rows(rows: list[dict[str, Any]], samples: Optional[Mapping[int, int]] = None) -> list[dict[str, Any]]:
    """Per-attacker admission (:func:`fedshield.metrics.attacker_admission`) from metrics rows that carry the
    ``malicious_clients`` and ``rejected_clients`` id lists (space-separated; a dropped update is not aggregated,
    so it counts as rejected). Rows written before those columns existed give ``[]``."""
    if not rows or any("malicious_clients" not in r or "rejected_clients" not in r for r in rows):
        return []

    def ids(cell: Any) -> list[int]:  # "3 7", 3 (a CSV cell read as a number), "" or NaN (none)
        if isinstance(cell, float) and math.isnan(cell):
            return []
        return [int(c) for c in str(cell).split()]

    dropped = [ids(r.get("dropped_clients", "")) for r in rows]
    return attacker_admission([ids(r["malicious_clients"]) for r in rows],
                              [ids(r["rejected_clients"]) + d for r, d in zip(rows, dropped)], samples)


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``cfg`` into ``out_dir`` (created); with ``resume`` continue from its checkpoint."""
    out = Path(out_dir)
    ckpt_path = out / "checkpoint.pt"
    resolved = dump_config(cfg)
    if (out / "summary.json").exists() and not resume:
        raise ConfigError(f"{out} already holds a finished run; choose another --out")
    if ckpt_path.exists() and not resume:
        raise ConfigError(f"{out} holds an unfinished run; continue it with --resume or choose another --out")
    prepare_out_dir(out)  # an unusable --out, a damaged or foreign checkpoint: reported before any data loads
    saved = load_checkpoint(ckpt_path, resolved) if resume and ckpt_path.exists() else None
    setup = build_setup(cfg)
    if cfg.post_training is not None:
        auxiliary_set(setup, cfg.post_training.aux_per_class)  # too small a held-out slice: refused before training
    pretrain: dict[str, Any] = {}
    if cfg.pretrain.rounds:
        start, key = pretrained_params(setup, log=log if progress else (lambda _m: None))
        setup = with_start(setup, start)
        start_eval = setup.evaluator.evaluate(setup.start)
        pretrain = {"pretrain_key": key, "pretrain_ma": start_eval["ma"], "pretrain_ba": start_eval["ba"]}
    if saved is not None:
        state = resume_state(saved, ckpt_path, setup.start, setup.new_defense())
        log(f"resuming {out} from round {state.round + 1}")
    else:
        state = RoundState(round=0, global_params=setup.start.clone(), defense=setup.new_defense())
    atomic_write_text(out / "config.yaml", resolved)
    start_time = time.perf_counter()
    elapsed_before = state.seconds

    bar = RoundProgress(cfg.name, cfg.rounds, state.round + 1) if progress and state.round < cfg.rounds else None
    while state.round < cfg.rounds:
        t = state.round + 1
        params, row = run_round(setup, state)
        if t % cfg.eval.every == 0 or t == cfg.rounds:
            t0 = time.perf_counter()
            row.update(setup.evaluator.evaluate(params))
            row["eval_s"] = round(time.perf_counter() - t0, 4)
        else:
            row["eval_s"] = 0.0
        state.advance(params, row, elapsed_before + time.perf_counter() - start_time)
        write_metrics_csv(out / "metrics.csv", state.rows)
        save_checkpoint(ckpt_path, state, setup.start, resolved)
        if bar is not None:
            bar.update(row)
    if bar is not None:
        bar.close()

    seconds = elapsed_before + time.perf_counter() - start_time
    summary = summarize(cfg, state.rows, seconds, {c: len(setup.client_indices[c]) for c in setup.attackers})
    summary.update(pretrain)
    # which arithmetic trained the clients (fedshield.kernels): "fedshield" (C kernels + fused SGD) or "torch"
    summary["kernels"] = "fedshield" if setup.trainer.fast_kernels else "torch"
    if setup.dataset.traffic is not None:  # what the traffic preprocessing did (non-finite counts, split, columns)
        rep = setup.dataset.traffic.report
        keys = ("split", "train_rows", "test_rows", "features", "dropped_columns", "nonfinite", "family_counts_train")
        summary["data_report"] = {k: rep[k] for k in keys if k in rep}
    final = {"global_params": state.global_params, "initial_params": setup.start, "layout": setup.layout.names}
    save_model_file(final, out / "final_model.pt")
    if cfg.post_training is not None:
        summary["post_training"] = run_post_training(setup, state.global_params)
    plot_run(state.rows, out / "metrics.png", title=cfg.name)
    write_json(out / "summary.json", summary)
    return summary
