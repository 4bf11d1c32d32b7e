"""Bad-input corpus, one round's input to a defense (pure functions): dtypes the contract refuses, rounds smaller
than a defense's parameters allow, and degenerate but valid rounds (one client, all-zero or identical updates,
d = 1, float64) with their exact answers."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from fedshield.core.errors import FedshieldError, RoundInputError
from fedshield.defenses import DefenseContext, RoundInput, available_defenses, build_defense
from fedshield.models import LayoutEntry, ParamLayout, build_model
from fedshield.sim.train import local_train_function
from roundinput import flat_layout, make_input

SMALL = {"deepsight": {"num_ddif_samples": 8}, "fltrust": {"epochs": 1}}  # their defaults cost seconds


@pytest.fixture(scope="module")
def model_ctx():
    model_fn = partial(build_model, "small_cnn", 1, 10, 28)
    layout = ParamLayout.from_module(model_fn())
    server = (torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.arange(20) % 10)
    return layout, DefenseContext(layout=layout, model_fn=model_fn, server_data=server,
                                  extra={"input_shape": (1, 28, 28)}, local_train=local_train_function(model_fn))


def _input(layout: ParamLayout, updates: torch.Tensor, g: torch.Tensor) -> RoundInput:
    n = updates.shape[0]
    return RoundInput(g, updates, layout, 1, list(range(n)), torch.ones(n), torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------------ dtypes


@pytest.mark.parametrize("name", available_defenses())
def test_updates_of_another_dtype_than_the_global_model_are_refused_by_every_defense(name, model_ctx):
    """float64 updates on a float32 model used to crash FLAME, Fedward, DeepSight and FLTrust inside torch
    ("Index put requires the source and destination dtypes match") and pass silently elsewhere."""
    layout, ctx = model_ctx
    u = 0.01 * torch.randn(8, layout.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(RoundInputError, match="float64.*float32|share one dtype"):
        build_defense(name, SMALL.get(name, {}), ctx).aggregate(_input(layout, u, torch.zeros(layout.dim)))


@pytest.mark.parametrize("name", ["fedavg", "krum", "trimmed_mean", "flame", "bulyan"])
def test_integer_updates_are_refused(name, model_ctx):
    layout, ctx = model_ctx
    u = torch.ones(8, layout.dim, dtype=torch.int64)
    with pytest.raises(RoundInputError, match="floating point.*int64"):
        build_defense(name, {}, ctx).aggregate(_input(layout, u, torch.zeros(layout.dim, dtype=torch.int64)))


@pytest.mark.parametrize("name", ["flame", "krum", "fedavg"])
def test_a_layout_without_trainable_coordinates_is_refused(name):
    """FLAME's BLAS call printed "SSYRK parameter number 7 had an illegal value" and Krum picked on buffers."""
    layout = ParamLayout((LayoutEntry("bn.running_mean", (5,), 0, 5, "buffer"),))
    inp = RoundInput(torch.zeros(5), torch.randn(9, 5), layout, 1, list(range(9)), torch.ones(9),
                     torch.Generator().manual_seed(0))
    with pytest.raises(RoundInputError, match="no trainable coordinates"):
        build_defense(name, {}).aggregate(inp)


def test_float64_round_gives_the_exact_float64_answer():
    """A consistent float64 round is computed in float64: the median and the mean of hand-made rows."""
    u = torch.tensor([[1.0, -2.0], [4.0, 0.5], [2.0, 8.0]], dtype=torch.float64)
    g = torch.tensor([0.25, 1.0], dtype=torch.float64)
    inp = RoundInput(g, u, flat_layout(2), 1, [0, 1, 2], torch.ones(3), torch.Generator().manual_seed(0))
    med = build_defense("median", {}).aggregate(inp).global_params
    assert med.dtype == torch.float64 and torch.equal(med, torch.tensor([2.25, 1.5], dtype=torch.float64))
    avg = build_defense("fedavg", {"weighting": "uniform"}).aggregate(inp).global_params
    assert avg.dtype == torch.float64
    assert torch.equal(avg, g + torch.tensor([7.0 / 3.0, 6.5 / 3.0], dtype=torch.float64))


def test_round_input_errors_are_fedshield_errors_and_value_errors():
    assert issubclass(RoundInputError, FedshieldError) and issubclass(RoundInputError, ValueError)
    with pytest.raises(RoundInputError, match=r"client id\(s\) \[1\]"):
        build_defense("fedavg", {}).aggregate(make_input(torch.zeros(2, 3), client_ids=[1, 1]))


# --------------------------------------------------------------------------- rounds smaller than the params


@pytest.mark.parametrize("name, params, need", [
    ("krum", {}, 5), ("krum", {"f": 2}, 7), ("multi_krum", {"f": 1, "m": 6}, 6), ("bulyan", {}, 7),
    ("bulyan", {"f": 2}, 11), ("rlr", {}, 4), ("rlr", {"threshold": 6}, 6), ("fedward", {}, 2),
    ("fedward", {"min_samples_rule": "code"}, 4), ("trimmed_mean", {"trim": 2}, 5), ("trimmed_mean", {}, 1),
    ("flame", {"min_cluster_size": 4}, 4), ("flame", {}, 1), ("fedavg", {}, 1), ("median", {}, 1),
])
def test_min_clients_is_the_smallest_round_the_defense_aggregates(name, params, need):
    defense = build_defense(name, params)
    assert defense.min_clients() == need
    ok = defense.aggregate(make_input(torch.randn(need, 3, generator=torch.Generator().manual_seed(need))))
    assert bool(torch.isfinite(ok.global_params).all())
    if need > 1:
        with pytest.raises(RoundInputError, match=f"needs at least {need} clients in a round, but round 1 has n={need - 1}"):
            defense.aggregate(make_input(torch.randn(need - 1, 3)))


# ------------------------------------------------------------------------------ degenerate but valid rounds

NOISELESS = {  # defenses whose answer on all-zero updates is exactly G (no noise, no server training)
    "afa": {}, "auror": {}, "fedavg": {}, "foolsgold": {}, "geomed": {}, "krum": {}, "median": {},
    "multi_krum": {}, "norm_clipping": {}, "rlr": {}, "trimmed_mean": {}, "fedward": {}, "bulyan": {},
    "flame": {"noise": False}, "fedcc": {}, "deepsight": {"num_ddif_samples": 8},
}


@pytest.mark.parametrize("name", sorted(NOISELESS))
def test_all_zero_updates_keep_the_global_model_exactly(name, model_ctx):
    """Zero norms everywhere (cosine similarities, clipping bounds, Weiszfeld weights divide by them): the
    next global model is exactly G, finite and not refused."""
    layout, ctx = model_ctx
    g = torch.linspace(-1, 1, layout.dim)
    agg = build_defense(name, NOISELESS[name], ctx).aggregate(_input(layout, torch.zeros(8, layout.dim), g))
    assert "refused" not in agg.info, agg.info
    assert torch.equal(agg.global_params, g)


@pytest.mark.parametrize("name", ["fedavg", "median", "trimmed_mean", "geomed", "krum", "multi_krum", "bulyan",
                                  "rlr", "fedward", "auror", "afa"])
def test_identical_updates_give_that_update(name):
    """Nine clients send the same update (d = 1 and d = 5): every noiseless robust mean returns it."""
    for d in (1, 5):
        u = torch.arange(1.0, d + 1).repeat(9, 1) * 0.125
        agg = build_defense(name, {}).aggregate(make_input(u))
        assert torch.allclose(agg.global_params, u[0], rtol=0, atol=1e-7), (name, d, agg.global_params)


@pytest.mark.parametrize("name", ["fedavg", "median", "geomed", "flame", "foolsgold", "norm_clipping", "afa",
                                  "trimmed_mean", "auror"])
def test_a_single_client_round_admits_that_client_and_applies_its_update(name):
    """n = 1 (clients_per_round: 1): no pairwise statistic exists; the one update (norm 1.15, under every
    default clipping bound) is the aggregate."""
    u = torch.tensor([[0.5, -0.25, 1.0]])
    params = {"noise": False} if name == "flame" else {}
    agg = build_defense(name, params).aggregate(make_input(u, g=[1.0, 2.0, 3.0]))
    assert agg.accepted.tolist() == [True]
    assert torch.equal(agg.global_params, torch.tensor([1.5, 1.75, 4.0]))


def test_auror_layer_missing_from_the_rounds_layout_is_a_parameter_error():
    from fedshield.core.errors import ParameterError
    with pytest.raises(ParameterError, match=r"layer='x' is invalid; allowed: a trainable tensor of the model, one of \['w'\]"):
        build_defense("auror", {"layer": "x"}).aggregate(make_input(torch.randn(6, 3)))
    agg = build_defense("auror", {"layer": "w"}).aggregate(make_input(torch.ones(6, 3)))
    assert torch.equal(agg.global_params, torch.ones(3))
