"""FLAIN (docs/defenses.md, FLAIN): flipping, stepping, stopping and rescaling on a hand-computable model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedshield.defenses import ParameterError
from fedshield.defenses.flain import FLAIN, FlainResult, aux_split, find_layer
from fedshield.models import ParamLayout, build_model, flatten_params


def tiny_model() -> nn.Module:
    # layer "0" (Linear 4→4) is not the analysed one when layer="2"; "1" is a ReLU
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))


def tiny_setup():
    """Input features after ReLU(identity): A = [0, .003, 1.001, 0] (label 0), B = [0, 0, 0, 4] (label 1).

    Mean activations a = [0, .0015, .5005, 2]. W_T of the last layer: class 0 ← x2, class 1 ← x3, class 2 ← x1.
    Flipping column 1 keeps both right; flipping column 2 makes every A wrong (acc 1 → .5).
    """
    model = tiny_model()
    layout = ParamLayout.from_module(model)
    final = flatten_params(model, layout).clone()
    final[layout["0.weight"].slice] = torch.eye(4).reshape(-1)
    final[layout["0.bias"].slice] = 0.0
    w_t = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    final[layout["2.weight"].slice] = w_t.reshape(-1)
    final[layout["2.bias"].slice] = torch.tensor([0.0, 0.0, 0.001])
    initial = final.clone()
    w_0 = torch.tensor([[0.01, 0.02, 0.03, 0.04], [-0.01, 0.0, 0.05, 0.02], [0.0, 0.03, -0.02, 0.01]])
    initial[layout["2.weight"].slice] = w_0.reshape(-1)
    initial[layout["2.bias"].slice] = torch.tensor([5.0, 5.0, 5.0])  # must not leak into the result
    initial[layout["0.weight"].slice] = 7.0  # must not leak either
    x = torch.cat([torch.tensor([[0.0, 0.003, 1.001, 0.0]]).repeat(5, 1), torch.tensor([[0.0, 0.0, 0.0, 4.0]]).repeat(5, 1)])
    y = torch.cat([torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long)])
    return model, layout, initial, final, w_0, w_t, x, y


def expected_weight(w_0, w_t, cols, rescale=True):
    w = w_t.clone()
    for j in cols:
        w[:, j] = 2 * w_0[:, j] - w_t[:, j]
    if rescale:
        w = w * (torch.linalg.matrix_norm(w_t) / torch.linalg.matrix_norm(w))
    return w


def run(**kw) -> tuple[FlainResult, ParamLayout, torch.Tensor, torch.Tensor, torch.Tensor]:
    model, layout, initial, final, w_0, w_t, x, y = tiny_setup()
    params = dict(k0=0.001, k_step=0.001, layer="2")
    params.update(kw)
    res = FLAIN(**params).repair(model, initial, final, x, y)
    return res, layout, final, w_0, w_t


def test_stops_at_first_violating_k_and_flips_and_rescales():
    res, layout, final, w_0, w_t = run()
    # k=.001 → L={0}; k=.002 → L={0,1}; next change at the first grid k ≥ .5005, i.e. .501 → L={0,1,2}: acc .5
    assert res.k == pytest.approx(0.501)
    assert res.flipped == 3
    assert res.steps == 3  # only the distinct candidate sets were evaluated
    assert res.aux_acc_before == 1.0
    w = layout.view(res.params, "2.weight")
    assert torch.allclose(w, expected_weight(w_0, w_t, [0, 1, 2]).float(), atol=1e-6)
    assert float(torch.linalg.matrix_norm(w)) == pytest.approx(float(torch.linalg.matrix_norm(w_t)), rel=1e-6)
    assert "dropped" in res.stopped_reason


def test_bias_and_other_layers_untouched():
    res, layout, final, _, _ = run()
    wslice = layout["2.weight"].slice
    mask = torch.ones_like(final, dtype=torch.bool)
    mask[wslice] = False
    assert torch.equal(res.params[mask], final[mask])


def test_return_last_acceptable_gives_previous_k():
    res, layout, final, w_0, w_t = run(return_last_acceptable=True)
    assert res.k == pytest.approx(0.5)
    assert res.flipped == 2
    w = layout.view(res.params, "2.weight")
    assert torch.allclose(w, expected_weight(w_0, w_t, [0, 1]).float(), atol=1e-6)
    assert res.aux_acc_after == 1.0


def test_first_k_violating_returns_final_model_unchanged():
    res, layout, final, _, _ = run(k0=0.6, return_last_acceptable=True)
    assert torch.equal(res.params, final)
    assert res.flipped == 0
    assert "first k" in res.stopped_reason
    res, layout, final, w_0, w_t = run(k0=0.6)
    assert res.k == pytest.approx(0.6) and res.flipped == 3


def test_no_violation_until_k_max():
    res, layout, final, w_0, w_t = run(max_acc_drop=1.0, k_max=1.0)
    assert "k_max" in res.stopped_reason
    assert res.k == pytest.approx(1.0)
    assert res.flipped == 3  # a_3 = 2 > 1 is never flipped
    w = layout.view(res.params, "2.weight")
    assert torch.allclose(w, expected_weight(w_0, w_t, [0, 1, 2]).float(), atol=1e-6)


def test_no_rescale_option():
    res, layout, final, w_0, w_t = run(rescale=False)
    w = layout.view(res.params, "2.weight")
    assert torch.allclose(w, expected_weight(w_0, w_t, [0, 1, 2], rescale=False).float(), atol=1e-6)


def test_initial_model_used_as_given():
    # another W_0 gives another flipped weight: the defense does not re-create W_0
    model, layout, initial, final, w_0, w_t, x, y = tiny_setup()
    w_0b = w_0 + 0.1
    initial_b = initial.clone()
    initial_b[layout["2.weight"].slice] = w_0b.reshape(-1)
    res = FLAIN(k0=0.001, k_step=0.001, layer="2").repair(model, initial_b, final, x, y)
    w = layout.view(res.params, "2.weight")
    assert torch.allclose(w, expected_weight(w_0b, w_t, [0, 1, 2]).float(), atol=1e-6)


def test_caller_model_not_modified():
    model, layout, initial, final, *_ , x, y = tiny_setup()
    before = flatten_params(model, layout)
    FLAIN(k0=0.001, k_step=0.001, layer="2").repair(model, initial, final, x, y)
    assert torch.equal(flatten_params(model, layout), before)


def test_default_layer_is_first_linear():
    assert find_layer(tiny_model(), None)[0] == "0"
    assert find_layer(build_model("lenet"), None)[0] == "fc1"
    with pytest.raises(ValueError):
        find_layer(tiny_model(), "1")  # ReLU has no weight


def test_lenet_smoke_runs_fast():
    torch.manual_seed(1)
    model = build_model("lenet")
    layout = ParamLayout.from_module(model)
    w0 = flatten_params(model, layout)
    wt = w0 + 0.01 * torch.randn(layout.dim)
    x = torch.rand(200, 1, 28, 28)
    y = torch.randint(0, 10, (200,))
    res = FLAIN(k0=1e-3, k_step=1e-3, k_max=0.05, max_acc_drop=0.0).repair(model, w0, wt, x, y, batch_size=100)
    assert res.params.shape == (layout.dim,)
    assert 0.0 <= res.aux_acc_after <= 1.0
    other = torch.ones(layout.dim, dtype=torch.bool)
    other[layout["fc1.weight"].slice] = False
    assert torch.equal(res.params[other], wt[other])


def test_aux_split_per_class_and_exclusion():
    y = torch.tensor([0, 1, 2] * 10)
    idx = aux_split(y, per_class=3, seed=0)
    assert idx.numel() == 9
    assert torch.bincount(y[idx]).tolist() == [3, 3, 3]
    assert torch.equal(idx, aux_split(y, per_class=3, seed=0))
    ex = torch.arange(0, 15)
    idx2 = aux_split(y, per_class=3, seed=1, exclude=ex)
    assert bool((idx2 >= 15).all())
    with pytest.raises(ValueError):
        aux_split(y, per_class=11, seed=0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"k0": -1.0}, "k0"),
        ({"k_step": 0.0}, "k_step"),
        ({"k_max": 1e-4}, "k_max"),
        ({"max_acc_drop": 1.5}, "max_acc_drop"),
        ({"max_acc_drop": -0.1}, "max_acc_drop"),
        ({"return_last_acceptable": "yes"}, "return_last_acceptable"),
        ({"layer": 3}, "layer"),
        ({"rescale": None}, "rescale"),
    ],
)
def test_bad_parameters_name_themselves(kwargs, name):
    with pytest.raises(ParameterError, match=name):
        FLAIN(**kwargs)


def test_bad_batch_size_and_shapes():
    model, layout, initial, final, *_, x, y = tiny_setup()
    with pytest.raises(ParameterError, match="batch_size"):
        FLAIN(layer="2").repair(model, initial, final, x, y, batch_size=0)
    with pytest.raises(ValueError, match="initial_params"):
        FLAIN(layer="2").repair(model, initial[:-1], final, x, y)


def test_cached_prefix_matches_plain_forward(monkeypatch):
    """The fx-split evaluator (prefix cached) gives the same result as running the full model every step."""
    from fedshield.defenses import flain as flain_mod

    torch.manual_seed(2)
    model = build_model("lenet")
    layout = ParamLayout.from_module(model)
    w0 = flatten_params(model, layout)
    wt = w0 + 0.02 * torch.randn(layout.dim)
    x = torch.rand(60, 1, 28, 28)
    y = torch.randint(0, 10, (60,))
    algo = FLAIN(k0=1e-3, k_step=1e-3, k_max=0.004, max_acc_drop=0.0)
    assert flain_mod._split_at_layer(model.eval(), "fc1") is not None
    fast = algo.repair(model, w0, wt, x, y, batch_size=50)
    monkeypatch.setattr(flain_mod, "_split_at_layer", lambda net, name: None)
    slow = algo.repair(model, w0, wt, x, y, batch_size=50)
    assert (fast.k, fast.flipped, fast.steps, fast.aux_acc_before, fast.aux_acc_after) == (
        slow.k, slow.flipped, slow.steps, slow.aux_acc_before, slow.aux_acc_after)
    assert torch.allclose(fast.params, slow.params)
