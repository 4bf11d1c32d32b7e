"""A clean warm start: ``pretrain.rounds`` rounds of plain FedAvg before round 1, cached on disk.

Backdoor papers run long (Fedward: 110 rounds, the attack from round 5), so most of their attacked rounds hit
a nearly converged global model. A short run from a random model spends its attacked rounds on a model that
is still learning the main task, and backdoor accuracy under robust aggregation stays low for that reason
alone. ``pretrain.rounds: N`` stands in for the long clean phase: the run starts from the model that N rounds
of FedAvg on the same clients, partition and benign training reach, with no attacker and no defense. Those
rounds are not the run's rounds (round 1 is the first round after them) and are not counted in AASR.

The pretrained model depends only on what shapes it (seed, model, clients, data, benign training, N), never
on the attack or defense, so every run of a sweep that shares those reuses one cached file. The file is
written atomically under a lock: parallel runs wait for the one that computes it instead of computing it
twice. Its random streams (client selection, local training) are their own, keyed by ("pretrain", round,
client), so the result is the same whatever the number of workers.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..core.numeric import weighted_mean
from ..core.seeding import numpy_stream, torch_stream
from .output import atomic_torch_save

__all__ = ["pretrain_cache_dir", "pretrain_shaping", "pretrain_key", "pretrained_params"]


def pretrain_cache_dir() -> Path:
    """``$FEDSHIELD_CACHE/pretrain`` (default ``~/.cache/fedshield/pretrain``)."""
    root = os.environ.get("FEDSHIELD_CACHE") or Path.home() / ".cache" / "fedshield"
    return Path(root) / "pretrain"


def pretrain_shaping(cfg) -> dict:
    """The config fields the pretrained model depends on (two configs that agree here share a warm start)."""
    return {
        "seed": cfg.seed,
        "model": cfg.model,
        "num_clients": cfg.num_clients,
        "clients_per_round": cfg.clients_per_round,
        "data": cfg.data.model_dump(mode="json", exclude={"root"}),
        "train": cfg.train.model_dump(mode="json"),
        "rounds": cfg.pretrain.rounds,
    }


def pretrain_key(setup) -> str:
    """A digest of everything the pretrained model depends on (config fields, torch version, initial weights)."""
    shaping = {**pretrain_shaping(setup.cfg), "torch": torch.__version__}
    h = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode())
    h.update(setup.initial_params.numpy().tobytes())
    return h.hexdigest()[:20]


def _pretrain(setup, log: Callable[[str], None]) -> Tensor:
    cfg = setup.cfg
    params = setup.initial_params.clone()
    for t in range(1, cfg.pretrain.rounds + 1):
        rng = numpy_stream(cfg.seed, "pretrain_select", t)
        selected = sorted(int(c) for c in rng.choice(cfg.num_clients, size=cfg.clients_per_round, replace=False))
        jobs = [(*setup.client_data(c), setup.benign_settings, torch_stream(cfg.seed, "pretrain", t, c), None) for c in selected]
        updates = torch.stack(setup.trainer.train_many(params, jobs))
        sizes = torch.tensor([len(setup.client_indices[c]) for c in selected], dtype=torch.float32)
        params = params + weighted_mean(updates, sizes)
        if t % 5 == 0 or t == cfg.pretrain.rounds:
            log(f"pretrain round {t}/{cfg.pretrain.rounds}")
    return params


def pretrained_params(setup, log: Callable[[str], None] = print) -> tuple[Tensor, str]:
    """The warm-start model of ``setup`` (from the cache, or computed and cached) and its cache key."""
    key = pretrain_key(setup)
    cache = pretrain_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{key}.pt"
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if path.exists():
            state = torch.load(path, weights_only=True)
        else:
            log(f"pretraining {setup.cfg.pretrain.rounds} clean FedAvg rounds into {path}")
            state = {"params": _pretrain(setup, log), "initial_params": setup.initial_params}
            atomic_torch_save(state, path)
    if not torch.equal(state["initial_params"], setup.initial_params):
        raise RuntimeError(f"{path}: cached pretrained model was made from other initial weights; delete it")
    return state["params"], key
