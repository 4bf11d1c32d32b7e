"""defense.from_round: plain unweighted FedAvg before the round, the configured defense from it on."""

from __future__ import annotations

import pytest
import torch

from fedshield.config import ConfigError, config_from_dict
from fedshield.defenses import ParameterError, build_defense
from fedshield.defenses.schedule import DefendFromRound, scheduled
from roundinput import make_input


def test_plain_mean_before_and_inner_defense_from_the_round():
    u = torch.tensor([[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]])
    g = torch.tensor([0.5, 0.5])
    median = build_defense("median")
    d = DefendFromRound(median, from_round=5)
    early = d.aggregate(make_input(u, g=g, rnd=4, num_samples=[1.0, 1.0, 98.0]))
    # unweighted mean of the updates, whatever the reported sizes: (104/3, 100/3)
    assert torch.allclose(early.global_params, g + torch.tensor([104.0 / 3, 100.0 / 3]))
    assert bool(early.accepted.all()) and early.info["defended"] == 0.0
    late = d.aggregate(make_input(u, g=g, rnd=5))
    assert torch.allclose(late.global_params, g + torch.tensor([3.0, 0.0]))  # coordinate-wise median
    assert late.info["defended"] == 1.0


def test_scheduled_from_round_one_is_the_defense_itself():
    f = build_defense("flame")
    assert scheduled(f, 1) is f
    assert isinstance(scheduled(f, 2), DefendFromRound)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_from_round(bad):
    with pytest.raises(ParameterError, match="from_round"):
        DefendFromRound(build_defense("fedavg"), bad)


def test_config_attack_start_resolves_to_the_attack_round():
    cfg = config_from_dict({"attack": {"name": "dba", "start_round": 5}, "defense": {"name": "flame", "from_round": "attack_start"}})
    assert cfg.defense_from_round() == 5
    assert config_from_dict({"defense": {"from_round": 3}}).defense_from_round() == 3
    assert config_from_dict({}).defense_from_round() == 1
    with pytest.raises(ConfigError, match="from_round"):
        config_from_dict({"defense": {"from_round": 0}})
    with pytest.raises(ConfigError, match="from_round"):
        config_from_dict({"defense": {"from_round": "later"}})


@pytest.mark.parametrize("bad", [True, 2.5, "3", [2], None])
def test_config_refuses_from_round_that_is_not_a_round(bad):
    with pytest.raises(ConfigError, match="defense.from_round"):
        config_from_dict({"defense": {"from_round": bad}})


def test_config_refuses_from_round_after_the_last_round():
    with pytest.raises(ConfigError, match="never run"):
        config_from_dict({"rounds": 5, "defense": {"name": "flame", "from_round": 6}})
    with pytest.raises(ConfigError, match="never run"):
        config_from_dict({"rounds": 5, "attack": {"name": "dba", "start_round": 7}, "defense": {"from_round": "attack_start"}})
    assert config_from_dict({"rounds": 5, "defense": {"from_round": 5}}).defense_from_round() == 5


def test_checkpoint_keeps_the_state_of_the_scheduled_defense(tmp_path):
    """The wrapped defense's state (FoolsGold's histories) goes into the checkpoint nested and comes back."""
    from fedshield.sim.checkpoint import defense_state, restore_defense_state

    gen = torch.Generator().manual_seed(0)
    rounds = [make_input(torch.randn(4, 6, generator=gen), rnd=r, client_ids=[0, 1, 2, r + 2]) for r in (1, 2, 3)]
    live = DefendFromRound(build_defense("foolsgold"), from_round=2)
    for inp in rounds[:2]:
        live.aggregate(inp)
    assert sorted(live.inner.history) == [0, 1, 2, 4]  # round 2 only: round 1 was plain FedAvg
    torch.save(defense_state(live), tmp_path / "s.pt")
    fresh = DefendFromRound(build_defense("foolsgold"), from_round=2)
    restore_defense_state(fresh, torch.load(tmp_path / "s.pt", weights_only=True), tmp_path / "s.pt")
    a, b = live.aggregate(rounds[2]), fresh.aggregate(rounds[2])
    assert torch.equal(a.global_params, b.global_params) and torch.equal(a.accepted, b.accepted)
    assert all(torch.equal(live.inner.history[c], fresh.inner.history[c]) for c in live.inner.history)
