"""The clean warm start: cached once per shaping config, shared across attacks and defenses, deterministic."""

import json

import torch

from fedshield.config import config_from_dict
from fedshield.sim import run_experiment
from fedshield.sim.pretrain import pretrain_cache_dir, pretrain_key, pretrained_params
from fedshield.sim.setup import build_setup


def _cfg(**over):
    base = {
        "seed": 5,
        "model": "small_cnn",
        "num_clients": 8,
        "clients_per_round": 4,
        "rounds": 2,
        "workers": 1,
        "data": {"dataset": "synthetic"},
        "train": {"lr": 0.05, "epochs": 1, "batch_size": 32},
        "attack": {"name": "dba", "num_attackers": 1, "start_round": 1, "train": {"lr": 0.05, "epochs": 1}},
        "pretrain": {"rounds": 3},
        "eval": {"every": 1},
    }
    base.update(over)
    return config_from_dict(base)


def test_pretrained_model_is_cached_shared_and_independent_of_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSHIELD_CACHE", str(tmp_path / "cache"))
    assert pretrain_cache_dir() == tmp_path / "cache" / "pretrain"
    logs: list[str] = []
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # the per-worker setting, so the sequential run is bit-comparable with workers=2
    try:
        s1 = run_experiment(_cfg(), tmp_path / "a", progress=True, log=logs.append)
    finally:
        torch.set_num_threads(saved)
    assert any("pretraining 3 clean FedAvg rounds" in m for m in logs)
    cached = list((tmp_path / "cache" / "pretrain").glob("*.pt"))
    assert len(cached) == 1 and cached[0].stem == s1["pretrain_key"]
    params = torch.load(cached[0])["params"]
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert torch.equal(ckpt["initial_params"], params)  # round 1 started from the pretrained model

    # another defense and another attack strength: same key, the cache is read, not recomputed
    logs.clear()
    s2 = run_experiment(_cfg(defense={"name": "median"}, attack={"name": "dba", "num_attackers": 1, "poison_per_batch": 5}),
                        tmp_path / "b", progress=True, log=logs.append)
    assert s2["pretrain_key"] == s1["pretrain_key"] and not any("pretraining" in m for m in logs)

    # computed afresh with two workers: bit-identical
    setup = build_setup(_cfg(workers=2))
    monkeypatch.setenv("FEDSHIELD_CACHE", str(tmp_path / "cache2"))
    again, _ = pretrained_params(setup, log=lambda m: None)
    assert torch.equal(again, params)

    # what shapes the model changes the key; the pretrained model learned something
    assert pretrain_key(build_setup(_cfg(train={"lr": 0.1, "epochs": 1, "batch_size": 32}))) != s1["pretrain_key"]
    assert pretrain_key(build_setup(_cfg(pretrain={"rounds": 4}))) != s1["pretrain_key"]
    initial_ma = setup.evaluator.evaluate(setup.initial_params)["ma"]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["pretrain_ma"] > initial_ma + 0.1


def test_no_pretrain_means_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSHIELD_CACHE", str(tmp_path / "cache"))
    s = run_experiment(_cfg(pretrain={"rounds": 0}), tmp_path / "a", progress=False)
    assert "pretrain_key" not in s and not (tmp_path / "cache").exists()
