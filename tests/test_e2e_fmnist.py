"""End-to-end runs on real Fashion-MNIST (installed by `make test`), small enough for the default test run.

20 clients (600 samples each), 8 per round, 6 rounds; 3 fixed attackers stamp a 5×5 square on 20 of 64
samples per batch. The runs are deterministic (seeded streams, fixed thread count per client), so each threshold
sits a small margin (about 2 points, 60 of the 3000 test images) inside the value measured with torch 2.13 on CPU:
a change that costs accuracy, weakens the poisoning or lets FLAME admit an attacker fails.
"""

import pytest

from fedshield.config import config_from_dict
from fedshield.sim import run_experiment

pytestmark = pytest.mark.slow


def _cfg(defense: str, attack: bool) -> dict:
    return {
        "name": f"e2e_{defense}",
        "seed": 0,
        "model": "lenet",
        "num_clients": 20,
        "clients_per_round": 8,
        "rounds": 6,
        "data": {"dataset": "fashion_mnist", "train_subset": 12000},
        "train": {"lr": 0.01, "momentum": 0.9, "epochs": 2, "batch_size": 64},
        "attack": {
            "name": "pixel" if attack else "none",
            "trigger": {"pattern": "square"},
            "num_attackers": 3,
            "start_round": 1,
            "poison_per_batch": 20,
            "train": {"lr": 0.05, "momentum": 0.9, "epochs": 3, "batch_size": 64, "milestones": [0.2, 0.8]},
        },
        "defense": {"name": defense},
        "eval": {"every": 6, "test_subset": 3000},
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    out = {}
    for key, defense, attack in (("clean", "fedavg", False), ("backdoor", "fedavg", True), ("flame", "flame", True)):
        out[key] = run_experiment(config_from_dict(_cfg(defense, attack)), root / key, progress=False)
    return out


def test_fedavg_learns_fashion_mnist(results):
    assert results["clean"]["final_ma"] >= 0.72  # measured 0.738


def test_pixel_backdoor_is_implanted_under_fedavg(results):
    assert results["backdoor"]["final_ba"] >= 0.86  # measured 0.885
    assert results["backdoor"]["final_ma"] >= 0.72  # measured 0.739
    assert results["backdoor"]["malicious_accepted_share"] == 1.0


def test_flame_rejects_the_attackers_and_the_backdoor(results):
    r = results["flame"]
    assert r["malicious_accepted_share"] <= 0.06  # measured 0.0 (at most one of 18 attacker updates)
    assert r["final_ba"] <= 0.09  # measured 0.070
    assert r["final_ma"] >= results["clean"]["final_ma"] - 0.02  # measured 0.741 (clean FedAvg 0.738)
