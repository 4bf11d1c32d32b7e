"""Baselines that need a model or server data: FLTrust, CRFL, FedCC, DeepSight (docs/defenses.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedshield.defenses import DefenseContext, ParameterError, RoundInput, build_defense
from fedshield.defenses.crfl import CRFL, certify, clip_model_norm, crfl_clip_bound, smoothed_predict
from fedshield.defenses.deepsight import DeepSight, neups, suspicious_labels, threshold_exceedings
from fedshield.defenses.fedcc import FedCC, linear_cka, penultimate_entry, rbf_cka, two_means_labels
from fedshield.defenses.fltrust import FLTrust, select_root_set
from fedshield.models import LayoutEntry, ParamLayout, build_model, flatten_params
from fedshield.sim.train import local_train_function
from roundinput import flat_layout, make_input


def small_cnn():
    return build_model("small_cnn")


def server_ctx(n=30, layout=None) -> DefenseContext:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 28, 28, generator=gen)
    y = torch.arange(n) % 10
    return DefenseContext(layout=layout, model_fn=small_cnn, server_data=(x, y),
                          local_train=local_train_function(small_cnn))


# ---------------------------------------------------------------------------------------------- FLTrust


def fltrust_with_g0(g0, monkeypatch, **params) -> FLTrust:
    d = FLTrust(server_data=(torch.zeros(4, 1), torch.arange(4)), local_train=lambda *args: None, **params)
    monkeypatch.setattr(d, "_server_update", lambda inp: torch.as_tensor(g0, dtype=torch.float32))
    return d


def test_fltrust_known_answer(monkeypatch):
    g0 = [1.0, 0.0, 0.0]
    d = fltrust_with_g0(g0, monkeypatch)
    ups = [[3.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 2.0, 2.0], [1.0, 1.0, 0.0]]
    out = d.aggregate(make_input(ups, g=[1.0, 1.0, 1.0]))
    assert out.accepted.tolist() == [True, False, False, True]
    s = 1 / math.sqrt(2)
    # ḡ_0 = [1,0,0] (TS 1), ḡ_3 = [s, s, 0] (TS s); rescaled to ‖g_0‖ = 1
    expected = (torch.tensor([1.0, 0, 0]) + s * torch.tensor([s, s, 0])) / (1 + s)
    assert torch.allclose(out.global_params, torch.ones(3) + expected, atol=1e-6)
    assert out.info["all_zero"] == 0.0
    assert out.info["server_update_norm"] == pytest.approx(1.0)


def test_fltrust_magnitude_normalised_and_server_lr(monkeypatch):
    d = fltrust_with_g0([0.0, 2.0], monkeypatch, server_lr=0.5)
    out = d.aggregate(make_input([[0.0, 100.0], [0.0, 0.001]]))
    # both point along g_0 → each rescaled to ‖g_0‖ = 2; mean = [0, 2]; η = 0.5
    assert torch.allclose(out.global_params, torch.tensor([0.0, 1.0]), atol=1e-6)


def test_fltrust_all_zero_keeps_global(monkeypatch):
    d = fltrust_with_g0([1.0, 0.0], monkeypatch)
    g = torch.tensor([0.3, -0.2])
    out = d.aggregate(make_input([[-1.0, 0.0], [0.0, 5.0], [-2.0, 1.0]], g=g))
    assert torch.equal(out.global_params, g)
    assert out.accepted.tolist() == [False, False, False]
    assert out.info["all_zero"] == 1.0


def test_fltrust_root_set_balanced():
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    assert select_root_set(y, 3).tolist() == [0, 4, 6]
    assert select_root_set(y, 5).tolist() == [0, 1, 4, 5, 6]
    assert select_root_set(y, 100).tolist() == list(range(7))


def test_fltrust_real_server_update_deterministic():
    ctx = server_ctx()
    d = build_defense("fltrust", {"root_size": 10, "batch_size": 10}, ctx)
    assert sorted(d.root_set[1].tolist()) == list(range(10))
    torch.manual_seed(0)
    model = small_cnn()
    layout = ParamLayout.from_module(model)
    g = flatten_params(model, layout)
    ups = 0.01 * torch.randn(3, layout.dim, generator=torch.Generator().manual_seed(3))
    a = d.aggregate(make_input(ups, g=g, layout=layout, seed=7))
    b = d.aggregate(make_input(ups, g=g, layout=layout, seed=7))
    assert torch.equal(a.global_params, b.global_params)
    assert a.info["server_update_norm"] > 0


def test_fltrust_missing_server_data_and_bad_params():
    with pytest.raises(ParameterError, match="data.server_holdout"):
        build_defense("fltrust", {}, DefenseContext(model_fn=small_cnn))
    for key, bad in (("root_size", 0), ("lr", -1.0), ("momentum", 1.0), ("server_lr", 0), ("epochs", 0)):
        with pytest.raises(ParameterError, match=key):
            build_defense("fltrust", {key: bad}, server_ctx())
    with pytest.raises(ParameterError, match="bogus"):
        build_defense("fltrust", {"bogus": 1}, server_ctx())


# ---------------------------------------------------------------------------------------------- CRFL


def test_crfl_global_norm_clipping_formula():
    assert crfl_clip_bound(5) == pytest.approx(2.5)
    assert crfl_clip_bound(200) == 15.0
    assert crfl_clip_bound(10, 15, 0.25, 4) == pytest.approx(6.5)  # EMNIST values
    d = CRFL(sigma=0.0)
    ups = [[6.0, 8.0, 0.0], [6.0, 8.0, 0.0]]  # FedAvg → G' = [6, 8, 0], ‖G'‖ = 10
    out = d.aggregate(make_input(ups, rnd=5))
    assert torch.allclose(out.global_params, torch.tensor([1.5, 2.0, 0.0]))  # scaled to ρ_5 = 2.5
    assert out.info["clip_bound"] == pytest.approx(2.5)
    assert out.info["norm_before"] == pytest.approx(10.0)
    assert out.info["clipped_norm"] == pytest.approx(2.5)
    assert out.info["clipped"] == 1.0
    small = d.aggregate(make_input([[0.1, 0.0, 0.0]], rnd=5))  # below the bound: unchanged
    assert torch.allclose(small.global_params, torch.tensor([0.1, 0.0, 0.0]))
    p, norm = clip_model_norm(torch.tensor([3.0, 4.0]), 1.0)
    assert norm == pytest.approx(5.0) and torch.allclose(p, torch.tensor([0.6, 0.8]))


def test_crfl_noise_std_on_fixed_seed_and_buffers_untouched():
    dtr, dbuf = 20000, 5
    layout = ParamLayout((LayoutEntry("w", (dtr,), 0, dtr, "weight"),
                          LayoutEntry("bn.running_mean", (dbuf,), dtr, dbuf, "buffer")))
    g = torch.zeros(dtr + dbuf)
    g[dtr:] = 3.0
    ups = torch.zeros(2, dtr + dbuf)
    out = CRFL(sigma=0.01).aggregate(make_input(ups, g=g, layout=layout, seed=11, rnd=1))
    noise = out.global_params[:dtr]
    expected = 0.01 * torch.randn(dtr, generator=torch.Generator().manual_seed(11))
    assert torch.allclose(noise, expected)
    assert float(noise.std()) == pytest.approx(0.01, rel=0.03)
    assert torch.equal(out.global_params[dtr:], g[dtr:])
    assert out.info["noise_std"] == 0.01
    assert CRFL(sigma=0.0).last_clipped_params is None


def test_crfl_fedward_code_variant():
    ups = [[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]  # norms 1, 2, 3 → S = 2
    out = CRFL(variant="fedward_code", lam=0.0).aggregate(make_input(ups))
    assert torch.allclose(out.global_params, torch.tensor([3.0, 2.0]) / 3)
    assert out.info["clip_bound"] == pytest.approx(2.0)
    noisy = CRFL(variant="fedward_code").aggregate(make_input(ups, seed=4))
    assert noisy.info["noise_std"] == pytest.approx(2e-4)


def test_certify_hand_made_counts():
    res = certify(torch.tensor([[990, 10, 0], [0, 500, 500], [2, 1, 997]]), alpha=0.001, sigma_t=0.01)
    eps = math.sqrt(math.log(1000) / 2000)
    assert res["label"].tolist() == [0, 1, 2]
    assert res["pa"][0].item() == pytest.approx(0.99 - eps)
    assert res["pb"][0].item() == pytest.approx(0.01 + eps)
    pa, pb = 0.99 - eps, 0.01 + eps
    assert res["hellinger"][0].item() == pytest.approx(-math.log(1 - (math.sqrt(pa) - math.sqrt(pb)) ** 2))
    phi_inv = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(pa, dtype=torch.float64)).item()
    assert res["radius_gaussian"][0].item() == pytest.approx(0.01 * phi_inv)
    assert res["certified"].tolist() == [True, False, True]
    assert res["hellinger"][1].item() == 0.0 and res["radius_gaussian"][1].item() == 0.0


def test_smoothed_predict_votes():
    torch.manual_seed(0)
    model_fn = lambda: nn.Linear(4, 3)  # noqa: E731
    m = model_fn()
    params = flatten_params(m)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    labels, counts = smoothed_predict(model_fn, params, x, sigma_t=0.0, num_samples=5,
                                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(labels, m(x).argmax(dim=1))
    assert counts.shape == (6, 3) and (counts.sum(dim=1) == 5).all()
    _, noisy = smoothed_predict(model_fn, params, x, sigma_t=0.01, num_samples=7,
                                generator=torch.Generator().manual_seed(0))
    assert (noisy.sum(dim=1) == 7).all()


def test_crfl_bad_params():
    for key, bad in (("variant", "x"), ("clip_threshold", 0), ("sigma", -1.0), ("clip_b", 0), ("weighting", "y")):
        with pytest.raises(ParameterError, match=key):
            build_defense("crfl", {key: bad})
    with pytest.raises(ParameterError, match="alpha"):
        certify(torch.tensor([[1, 2]]), alpha=0.0)


# ---------------------------------------------------------------------------------------------- FedCC


def test_cka_identity_and_scale_invariance():
    x = torch.randn(12, 7, generator=torch.Generator().manual_seed(0))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x) == pytest.approx(1.0)
    assert rbf_cka(x, x) == pytest.approx(1.0)
    assert rbf_cka(x, 3.0 * x) == pytest.approx(1.0)
    y = torch.randn(12, 7, generator=torch.Generator().manual_seed(1))
    assert linear_cka(x, y) < 0.9 and rbf_cka(x, y) < 0.9


def test_two_means_labels():
    assert two_means_labels(np.array([0.0, 0.1, 0.9, 1.0, 0.95])).tolist() == [0, 0, 1, 1, 1]
    assert two_means_labels(np.array([0.5, 0.5])).tolist() == [0, 0]


def mlp_layout() -> ParamLayout:
    shapes = [("fc1.weight", (8, 6)), ("fc1.bias", (8,)), ("fc2.weight", (3, 8)), ("fc2.bias", (3,))]
    entries, off = [], 0
    for name, shape in shapes:
        numel = int(np.prod(shape))
        entries.append(LayoutEntry(name, shape, off, numel, "bias" if name.endswith("bias") else "weight"))
        off += numel
    return ParamLayout(tuple(entries))


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_fedcc_rejects_deviating_client(kernel):
    layout = mlp_layout()
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(layout.dim, generator=gen)
    ups = 0.01 * torch.randn(7, layout.dim, generator=gen)
    e = layout["fc1.weight"]
    ups[6, e.slice] = 3.0 * torch.randn(e.numel, generator=gen)  # PLR replaced by something unrelated
    d = build_defense("fedcc", {"kernel": kernel}, DefenseContext(layout=layout))
    out = d.aggregate(make_input(ups, g=g, layout=layout))
    assert out.accepted.tolist() == [True] * 6 + [False]
    assert torch.allclose(out.global_params, g + ups[:6].mean(dim=0))
    assert out.info["cka_min"] < out.info["cka_benign_mean"]


def test_fedcc_layer_choice_and_fedward_variant():
    lenet_layout = ParamLayout.from_module(build_model("lenet"))
    assert penultimate_entry(lenet_layout).name == "fc1.weight"
    assert penultimate_entry(ParamLayout.from_module(small_cnn())).name == "conv2.weight"  # fallback (≥ 2-D)
    layout = mlp_layout()
    gen = torch.Generator().manual_seed(2)
    ups = 0.01 * torch.randn(7, layout.dim, generator=gen)
    ups[5:, layout["fc2.bias"].slice] += 5.0  # two clients push the output layer
    out = FedCC(variant="fedward_code").aggregate(make_input(ups, layout=layout))
    assert out.accepted.tolist() == [True] * 5 + [False] * 2


def test_fedcc_bad_params():
    for key, bad in (("variant", "v"), ("kernel", "poly")):
        with pytest.raises(ParameterError, match=key):
            build_defense("fedcc", {key: bad})
    with pytest.raises(ParameterError, match="layer"):
        build_defense("fedcc", {"layer": "nope"}, DefenseContext(layout=mlp_layout()))


# ---------------------------------------------------------------------------------------------- DeepSight


def test_deepsight_neup_and_threshold_exceedings():
    dw = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # (n=1, P=2, H=2)
    db = torch.tensor([[1.0, 2.0]])
    c = neups(dw, db)  # E = [3, 2] → C = [9/13, 4/13]
    assert torch.allclose(c, torch.tensor([[9 / 13, 4 / 13]], dtype=torch.float64))
    assert threshold_exceedings(c).tolist() == [1]  # threshold 0.5 · 9/13 = 4.5/13 > 4/13
    c10 = torch.full((1, 10), 0.1, dtype=torch.float64)
    assert threshold_exceedings(c10).tolist() == [10]  # threshold max(0.01, 1/10) · 0.1 = 0.01
    c10[0, 0] = 0.5
    c10[0, 1:] = 0.05  # not > 0.1 · 0.5 (strict)
    assert threshold_exceedings(c10).tolist() == [1]
    c10[0, 1:] = 0.051  # > 0.1 · 0.5 = 0.05
    assert threshold_exceedings(c10).tolist() == [10]


def test_deepsight_suspicious_rule():
    te = torch.tensor([5, 5, 5, 1, 2, 6, 3])  # median 5 → suspicious iff TE ≤ 2.5
    assert suspicious_labels(te).tolist() == [False, False, False, True, True, False, False]
    assert suspicious_labels(torch.tensor([4, 4, 2])).tolist() == [False, False, True]  # "≤": 2 ≤ 4/2


def test_deepsight_end_to_end_rejects_bias_pushers():
    torch.manual_seed(0)
    model = small_cnn()
    layout = ParamLayout.from_module(model)
    g = flatten_params(model, layout)
    gen = torch.Generator().manual_seed(5)
    base = 0.01 * torch.randn(layout.dim, generator=gen)
    ups = base + 0.002 * torch.randn(9, layout.dim, generator=gen)
    b = layout["fc.bias"]
    w = layout["fc.weight"]
    target = 3
    ups[6:, b.offset + target] += 2.0
    ups[6:, w.offset + target * w.shape[1] : w.offset + (target + 1) * w.shape[1]] += 0.05
    d = build_defense("deepsight", {"num_ddif_samples": 64}, DefenseContext(layout=layout, model_fn=small_cnn))
    out = d.aggregate(make_input(ups, g=g, layout=layout, seed=3))
    assert out.accepted.tolist() == [True] * 6 + [False] * 3
    assert out.info["suspicious"] == 3.0
    assert out.info["num_clusters"] >= 2
    norms = torch.linalg.vector_norm(ups.double(), dim=1)
    bound = float(torch.sort(norms).values[4])  # median of all 9 norms
    assert out.info["clip_bound"] == pytest.approx(bound)
    scale = torch.clamp(bound / norms[:6], max=1.0).float()
    expected = g + (ups[:6] * scale.unsqueeze(1)).mean(dim=0)
    assert torch.allclose(out.global_params, expected, atol=1e-6)


def test_deepsight_missing_model_and_bad_params():
    with pytest.raises(ParameterError, match="model_fn"):
        build_defense("deepsight", {}, DefenseContext())
    ctx = DefenseContext(model_fn=small_cnn)
    for key, bad in (("num_ddif_samples", 0), ("tau", 0.0), ("min_cluster_size", 1), ("num_seeds", 0)):
        with pytest.raises(ParameterError, match=key):
            build_defense("deepsight", {key: bad}, ctx)
    with pytest.raises(ParameterError, match="input_shape"):
        build_defense("deepsight", {}, DefenseContext(model_fn=small_cnn, extra={"input_shape": (3, 5, 5)}))


def test_registered():
    from fedshield.defenses import available_defenses

    names = available_defenses()
    for name in ("fltrust", "crfl", "fedcc", "deepsight"):
        assert name in names and names[name].paper and names[name].summary
