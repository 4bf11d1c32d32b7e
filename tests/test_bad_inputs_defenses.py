"""Bad-input corpus, defenses: what a round may carry (huge finite updates, lying sample counts, a client id
twice, NaN/Inf) and what a defense may return (a non-finite model). The contract refuses bad input with a
ValueError naming the client, and never passes a non-finite global model on: the round keeps the previous
model and records why. End to end: no run writes a non-finite model."""

from __future__ import annotations

import json
import math
from functools import partial

import pytest
import torch

from badinput import TINY, assert_no_non_finite_models, cli, tiny_config
from fedshield.config import config_from_dict
from fedshield.defenses import Aggregate, Defense, DefenseContext, available_defenses, build_defense, refuse_non_finite
from fedshield.core.numeric import mean_rows, median, weighted_mean
from fedshield.defenses.trimmed_mean import trimmed_mean
from fedshield.models import ParamLayout, build_model
from fedshield.sim import run_experiment
from fedshield.sim.train import local_train_function
from roundinput import make_input

BIG = 3.0e38  # finite in float32 (max 3.4028e38); the sum of two is not


@pytest.fixture(scope="module")
def model_ctx():
    model_fn = partial(build_model, "small_cnn", 1, 10, 28)
    layout = ParamLayout.from_module(model_fn())
    server = (torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.arange(20) % 10)
    return layout, DefenseContext(layout=layout, model_fn=model_fn, server_data=server, extra={"input_shape": (1, 28, 28)},
                                  local_train=local_train_function(model_fn))


# ------------------------------------------------------------------------------------- overflow in reductions


def test_uniform_mean_of_huge_finite_updates_is_exact():
    u = torch.full((4, 3), BIG)
    assert torch.equal(mean_rows(u), torch.full((3,), BIG))
    assert torch.equal(weighted_mean(u), torch.full((3,), BIG))


def test_sample_weighted_mean_of_huge_finite_updates():
    u = torch.tensor([[BIG, -BIG], [BIG, BIG]])
    out = weighted_mean(u, torch.tensor([1.0, 3.0]))
    assert torch.allclose(out.double(), torch.tensor([BIG, 0.5 * BIG], dtype=torch.float64), rtol=1e-6)


def test_trimmed_mean_of_huge_finite_updates():
    u = torch.tensor([[BIG], [BIG], [BIG], [-1.0], [BIG]])
    assert float(trimmed_mean(u, 1)[0]) == pytest.approx(BIG, rel=1e-6)


def test_median_of_two_huge_values_does_not_overflow():
    assert float(median(torch.tensor([[BIG], [BIG]]), dim=0)[0]) == pytest.approx(BIG, rel=1e-6)


@pytest.mark.parametrize("name, params", [("fedavg", {"weighting": "uniform"}), ("fedavg", {}), ("trimmed_mean", {}),
                                          ("multi_krum", {"f": 1}), ("median", {})])
def test_huge_finite_updates_give_the_huge_finite_answer(name, params):
    """All five clients send the same huge update: every one of these aggregates must be exactly that update."""
    agg = build_defense(name, params).aggregate(make_input(torch.full((5, 4), BIG)))
    assert torch.allclose(agg.global_params.double(), torch.full((4,), BIG, dtype=torch.float64), rtol=1e-6)
    assert "refused" not in agg.info


def test_no_registered_defense_returns_a_non_finite_model(model_ctx):
    """Huge finite updates (three near float32's maximum) through every defense: finite, or refused with a reason."""
    layout, ctx = model_ctx
    u = torch.randn(10, layout.dim, generator=torch.Generator().manual_seed(0)).clamp(-3, 3) * 1e36
    u[:3] *= 100
    g = torch.zeros(layout.dim)
    small = {"deepsight": {"num_ddif_samples": 8}, "fltrust": {"epochs": 1}}  # their defaults cost seconds
    for name in available_defenses():
        agg = build_defense(name, small.get(name, {}), ctx).aggregate(make_input(u, g=g, layout=layout))
        assert bool(torch.isfinite(agg.global_params).all()), name
        if agg.info.get("refused") == 1.0:
            assert torch.equal(agg.global_params, g) and not bool(agg.accepted.any()), name
            # private_flame refuses a round no client can share (fixed point cannot hold 1e36): its own reason
            assert ("non-finite" if name != "private_flame" else "can be shared") in agg.info["refused_reason"], name


# ------------------------------------------------------------------------------------------ the output check


def test_server_lr_that_blows_the_model_up_is_refused_and_recorded():
    agg = build_defense("fedavg", {"server_lr": 1e38}).aggregate(make_input(torch.full((3, 2), 10.0), g=[1.0, 2.0]))
    assert agg.global_params.tolist() == [1.0, 2.0]  # the previous global model, kept
    assert agg.accepted.tolist() == [False, False, False]
    assert agg.info["refused"] == 1.0 and "fedavg" in agg.info["refused_reason"] and "2 non-finite" in agg.info["refused_reason"]


class _Broken(Defense):
    name = "broken_for_test"

    def __init__(self, out):
        self.out = out

    def _aggregate(self, inp):
        return Aggregate(self.out, torch.ones(inp.n, dtype=torch.bool), {})


def test_a_defense_returning_nan_is_refused():
    agg = _Broken(torch.tensor([float("nan"), 0.0])).aggregate(make_input(torch.ones(2, 2)))
    assert agg.global_params.tolist() == [0.0, 0.0] and agg.info["refused"] == 1.0


def test_a_defense_returning_the_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"broken_for_test returned a global model of shape \(3,\), expected \(2,\)"):
        _Broken(torch.zeros(3)).aggregate(make_input(torch.ones(2, 2)))


def test_refuse_non_finite_leaves_finite_aggregates_alone():
    inp = make_input(torch.ones(2, 2))
    agg = Aggregate(torch.ones(2), torch.ones(2, dtype=torch.bool), {"x": 1.0})
    assert refuse_non_finite(inp, agg) is agg


# ------------------------------------------------------------------------------------------ the round's input


@pytest.mark.parametrize("counts, client", [([-5.0, 1.0, 1.0], "[0]"), ([1.0, math.inf, 1.0], "[1]"),
                                            ([1.0, 1.0, math.nan], "[2]")])
def test_num_samples_negative_or_not_finite_names_the_client(counts, client):
    with pytest.raises(ValueError, match=rf"num_samples must be finite and >= 0; client\(s\) \{client}"):
        build_defense("fedavg").aggregate(make_input(torch.ones(3, 2), num_samples=counts))


def test_duplicate_client_ids_are_refused():
    """FoolsGold would add the same client's update to its history twice."""
    with pytest.raises(ValueError, match=r"client id\(s\) \[7\] appear more than once"):
        build_defense("foolsgold").aggregate(make_input(torch.randn(3, 2), client_ids=[7, 7, 2]))


def test_all_zero_sample_counts_name_the_problem():
    with pytest.raises(ValueError, match="positive sum"):
        build_defense("fedavg").aggregate(make_input(torch.ones(2, 2), num_samples=[0.0, 0.0]))


def test_nan_update_names_the_client():
    u = torch.ones(3, 2)
    u[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"client\(s\) \[11\]"):
        build_defense("median").aggregate(make_input(u, client_ids=[10, 11, 12]))


# ------------------------------------------------------------------------------------------ end to end


def test_run_whose_every_round_overflows_keeps_a_finite_model(tmp_path, capsys):
    """Before: exit 0 with an all-Inf final model. Now: every round refused and recorded, the model stays
    finite (the initial one), a warning says so."""
    cfg = tiny_config(tmp_path, rounds=2, defense={"name": "fedavg", "params": {"server_lr": 1e300}})
    out = tmp_path / "o"
    rc, _, err = cli(capsys, ["run", str(cfg), "--out", str(out), "--quiet"])
    assert rc == 0 and "2 round(s) refused a non-finite aggregate" in err
    assert json.loads((out / "summary.json").read_text())["refused_rounds"] == 2
    assert "kept the previous global model" in (out / "metrics.csv").read_text()
    assert assert_no_non_finite_models(out) == 2
    final = torch.load(out / "final_model.pt", weights_only=True)
    assert torch.equal(final["global_params"], final["initial_params"])


def test_attackers_sending_overflowing_updates_are_dropped_and_recorded(tmp_path):
    """A boosting attacker whose scaled update overflows to Inf: dropped (recorded), the run goes on."""
    cfg = config_from_dict({**TINY, "rounds": 1, "attack": {"name": "boosting", "num_attackers": 1,
                                                            "params": {"factor": 1e300}}})
    out = tmp_path / "o"
    run_experiment(cfg, out, progress=False)
    text = (out / "metrics.csv").read_text()
    assert "dropped_reason" in text and "client(s) [0]" in text
    assert assert_no_non_finite_models(out) == 2


def test_a_round_where_every_update_is_non_finite_is_a_clear_error(tmp_path, capsys):
    cfg = tiny_config(tmp_path, train={"epochs": 1, "lr": 1e30})
    rc, _, err = cli(capsys, ["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and "every update is non-finite" in err and "train.lr" in err and "Traceback" not in err
    assert assert_no_non_finite_models(tmp_path / "o") == 0
