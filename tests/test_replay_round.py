"""scripts/replay_round.py: one round replayed from a finished run shows what the defense saw."""

import importlib.util
from pathlib import Path

import pytest
import torch

from fedshield.config import config_from_dict
from fedshield.sim import run_experiment

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "replay_round.py"


def _load():
    spec = importlib.util.spec_from_file_location("replay_round", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_replayed_round_is_the_run_s_own_round(tmp_path, capsys):
    """Replaying round 3 from the 2-round run's folder gives the same updates and decisions a 3-round run made
    in its round 3 (same seeded streams), and the distances are those of the updates and models."""
    base = {"name": "replay", "seed": 5, "model": "small_cnn", "num_clients": 8, "clients_per_round": 5, "rounds": 2,
            "data": {"dataset": "synthetic", "partition": "dirichlet", "alpha": 0.5},
            "train": {"lr": 0.05, "epochs": 1, "batch_size": 32},
            "attack": {"name": "dba", "num_attackers": 2, "start_round": 1, "poison_per_batch": 10,
                       "train": {"lr": 0.05, "epochs": 2, "batch_size": 32}},
            "defense": {"name": "fedcc"}}
    run_experiment(config_from_dict(base), tmp_path / "two", progress=False)
    rows = _load().replay(tmp_path / "two")
    three = tmp_path / "three"
    run_experiment(config_from_dict({**base, "rounds": 3}), three, progress=False)
    import csv

    with open(three / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert [r["client"] for r in rows if not r["admitted"]] == [int(c) for c in last["rejected_clients"].split()]
    assert [r["client"] for r in rows if r["attacker"]] == [int(c) for c in last["malicious_clients"].split()]
    assert sum(r["admitted"] for r in rows) == int(last["accepted"]) and 0 < int(last["accepted"]) < 5
    assert all(r["norm"] > 0 and r["samples"] > 0 for r in rows)
    assert _load().main([str(tmp_path / "two")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("client  attacker") and out[1].startswith("median update norm") and len(out) == 2 + 5


def test_unfinished_run_is_refused(tmp_path):
    (tmp_path / "config.yaml").write_text("name: x\n")
    with pytest.raises(SystemExit, match="no final_model.pt"):
        _load().replay(tmp_path)
