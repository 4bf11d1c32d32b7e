"""Fedward (docs/defenses.md, Fedward): known answers on small inputs, paper and authors' code variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedshield.defenses import ParameterError, RoundInput, build_defense
from fedshield.defenses.fedward import (
    Fedward,
    amgrad,
    autooptics_eps,
    autooptics_min_samples,
    euclidean_distances,
    fedward_clip_bound,
)
from fedshield.models import LayoutEntry, ParamLayout
from roundinput import flat_layout, make_input

SQ3 = math.sqrt(3.0)




TINY = ParamLayout(
    (
        LayoutEntry("fc.weight", (2, 2), 0, 4, "weight"),
        LayoutEntry("fc.bias", (2,), 4, 2, "bias"),
        LayoutEntry("bn.running_var", (1,), 6, 1, "buffer"),
        LayoutEntry("zero.weight", (2,), 7, 2, "weight"),
    )
)


def six_plus_four(seed=0):
    gen = torch.Generator().manual_seed(seed)
    layout = ParamLayout((LayoutEntry("a.weight", (30,), 0, 30, "weight"), LayoutEntry("a.bias", (20,), 30, 20, "bias")))
    base = torch.randn(50, generator=gen)
    other = torch.randn(50, generator=gen)
    ben = base * (1 + 0.1 * torch.rand(6, 50, generator=gen))
    att = other * (1 + 0.1 * torch.rand(4, 50, generator=gen))
    return torch.cat([ben, att]), layout


# ----------------------------------------------------------------------------------------------- AmGrad


def test_amgrad_sign_max_by_hand():
    u = torch.tensor([[0.3, -0.1, 0.0, -0.4, 0.2, 0.1, 99.0, 0.0, 0.0]])
    a = amgrad(u, TINY, "sign_max")
    # buffer excluded; zero layer → 0
    assert torch.allclose(a, torch.tensor([[0.4, -0.4, 0.0, -0.4, 0.2, 0.2, 0.0, 0.0]]))


def test_amgrad_sparsify_by_hand_half_to_even():
    u = torch.tensor([[0.3, -0.1, 0.0, -0.4, 0.2, 0.1, 99.0, 0.0, 0.0]])
    a = amgrad(u, TINY, "sparsify")
    # weight |x|/max = .75, .25, 0, 1 → 1, 0, 0, 1; bias 1, 0.5 → 1, 0 (half to even)
    assert torch.allclose(a, torch.tensor([[0.4, 0.0, 0.0, -0.4, 0.2, 0.0, 0.0, 0.0]]))


# ----------------------------------------------------------------------------------------------- AutoOPTICS


def test_eps_on_hand_matrix_4x4():
    d = torch.tensor([[0, 1, 4, 6], [1, 0, 2, 5], [4, 2, 0, 3], [6, 5, 3, 0]], dtype=torch.float64)
    # rows sorted: [0,1,4,6] [0,1,2,5] [0,2,3,4] [0,3,5,6]
    assert autooptics_min_samples(4, "paper") == 3
    assert autooptics_eps(d, 3 - 1) == pytest.approx(3.5)  # median of 4,2,3,5
    assert autooptics_eps(d, 1) == pytest.approx(1.5)


def test_eps_column_paper_vs_code_odd_m():
    pos = torch.tensor([0.0, 1.0, 3.0, 7.0, 15.0], dtype=torch.float64)
    d = (pos.unsqueeze(0) - pos.unsqueeze(1)).abs()
    assert autooptics_min_samples(5, "paper") == 4
    assert autooptics_min_samples(5, "code") == 2
    assert Fedward()._eps_column(5, 4) == 3
    assert Fedward(variant="authors_code")._eps_column(5, 2) == 2
    assert autooptics_eps(d, 3) == pytest.approx(7.0)  # column 3: 7, 6, 4, 7, 14
    assert autooptics_eps(d, 2) == pytest.approx(3.0)  # column 2: 3, 2, 3, 6, 12


def test_euclidean_distances_match_cdist():
    x = torch.randn(7, 13, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(euclidean_distances(x), torch.cdist(x.double(), x.double()), atol=1e-10)


def test_clip_bound_is_inds_th_smallest_norm():
    norms = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])
    assert float(fedward_clip_bound(norms, 3)) == 3.0
    assert float(fedward_clip_bound(norms, 5)) == 5.0
    with pytest.raises(ValueError):
        fedward_clip_bound(norms, 0)


# ----------------------------------------------------------------------------------------------- rounds


def test_paper_round_by_hand():
    # AmGrad vectors c·(1,1,1): pairwise distances |c_i − c_j|·√3. m=5, mins=4, eps column 3.
    # Core distances (4th smallest per row): .375√3, .25√3, .25√3, .375√3, 7.5√3 → eps = median = .375√3,
    # so the four small clients are all core points and form the cluster; the last one is noise.
    c = [0.125, 0.25, 0.375, 0.5, 8.0]
    u = torch.tensor([[v] * 3 for v in c])
    g = torch.full((3,), 1.0)
    agg = Fedward().aggregate(make_input(u, g=g))
    assert agg.accepted.tolist() == [True, True, True, True, False]
    assert agg.info["eps"] == pytest.approx(0.375 * SQ3, rel=1e-6)
    assert agg.info["min_samples"] == 4.0
    assert agg.info["clip_bound"] == pytest.approx(0.5 * SQ3, rel=1e-6)  # 4th smallest norm: nothing clipped
    assert torch.allclose(agg.global_params, g + 0.3125, atol=1e-6)


def test_paper_clipping_mean_of_clipped():
    x, layout = six_plus_four()
    g = torch.full((50,), 0.2)
    agg = Fedward().aggregate(make_input(x, g=g, layout=layout))
    acc = agg.accepted
    k = int(acc.sum())
    norms = torch.linalg.vector_norm(x.double(), dim=1)
    s = float(torch.sort(norms).values[k - 1])
    assert agg.info["clip_bound"] == pytest.approx(s, rel=1e-6)
    scale = torch.clamp(s / norms[acc], max=1.0)
    expected = g.double() + (x[acc].double() * scale.unsqueeze(1)).mean(0)
    assert torch.allclose(agg.global_params.double(), expected, atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "authors_code"])
def test_malicious_excluded_six_plus_four(variant):
    x, layout = six_plus_four()
    agg = Fedward(variant=variant).aggregate(make_input(x, layout=layout))
    assert not bool(agg.accepted[6:].any())
    assert int(agg.accepted.sum()) >= 1
    assert agg.info["num_clusters"] >= 1.0 and agg.info["all_noise"] == 0.0


def test_authors_code_sum_of_signs_by_hand():
    u = torch.tensor([[0.1] * 3, [0.2] * 3, [0.3] * 3, [0.4] * 3])
    u[1, 2] = -0.2  # a negative coordinate; AmGrad (sparsify) of row 1 becomes .2·(1, 1, −1)
    g = torch.full((3,), 1.0)
    agg = Fedward(variant="authors_code").aggregate(make_input(u, g=g))
    assert agg.info["min_samples"] == 2.0
    assert bool(agg.accepted.all())
    # α = mean|Δ| = .1, .2, .3, .4; S = median = .25; step = Σ sign(Δ_i)·min(α_i, S)
    assert agg.info["clip_bound"] == pytest.approx(0.25)
    expected = g + torch.tensor([0.1 + 0.2 + 0.25 + 0.25, 0.1 + 0.2 + 0.25 + 0.25, 0.1 - 0.2 + 0.25 + 0.25])
    assert torch.allclose(agg.global_params, expected, atol=1e-6)


def test_scaled_attacker_is_rejected_and_clipping_bounds_scaling():
    x, layout = six_plus_four()
    x[6] *= 100.0  # a model-replacement style scaled attacker
    for variant in ("paper", "authors_code"):
        agg = Fedward(variant=variant).aggregate(make_input(x, layout=layout))
        assert not bool(agg.accepted[6:].any()), variant
    # were it admitted, the paper clip would cut it to the |inds|-th norm, far below its own
    norms = torch.linalg.vector_norm(x.double(), dim=1)
    rho = fedward_clip_bound(norms, 6)
    assert float(rho) < float(norms[6]) / 10
    # and the code's per-coordinate step is at most S whatever the scale
    agg = Fedward(variant="authors_code", all_noise_policy="admit_all").aggregate(make_input(x, layout=layout))
    assert float((agg.global_params).abs().max()) <= int(agg.accepted.sum()) * agg.info["clip_bound"] + 1e-6


def test_all_noise_policy(monkeypatch):
    from fedshield.defenses import fedward as fw

    class AllNoise:
        def __init__(self, **kw):
            pass

        def fit(self, d):
            self.labels_ = np.full(d.shape[0], -1)
            return self

    monkeypatch.setattr(fw, "OPTICS", AllNoise)
    x, layout = six_plus_four()
    g = torch.full((50,), 0.3)
    agg = Fedward().aggregate(make_input(x, g=g, layout=layout))
    assert not bool(agg.accepted.any()) and agg.info["all_noise"] == 1.0
    assert torch.equal(agg.global_params, g)  # code behaviour: G unchanged
    agg = Fedward(all_noise_policy="admit_all").aggregate(make_input(x, g=g, layout=layout))
    assert bool(agg.accepted.all()) and agg.info["all_noise"] == 1.0
    # all admitted: ρ = the m-th (largest) norm, so nothing is clipped: plain mean
    assert torch.allclose(agg.global_params, g + x.mean(0), atol=1e-5)


def test_buffers_excluded_and_averaged():
    gen = torch.Generator().manual_seed(2)
    base = torch.tensor([0.3, -0.1, 0.2, -0.4, 0.2, 0.1, 0.0, 0.5, -0.5])
    u = base * (1 + 0.05 * torch.rand(6, 9, generator=gen))
    u[:, 6] = torch.tensor([1e6, -3e5, 7.0, 0.0, 2e5, -1e6])  # buffer: would dominate any distance or norm
    agg = Fedward().aggregate(make_input(u, layout=TINY))
    acc = agg.accepted
    k = int(acc.sum())
    assert k >= 4  # the buffer's huge spread does not split the clients
    assert torch.allclose(agg.global_params[6], u[acc, 6].mean())
    tr = torch.tensor([0, 1, 2, 3, 4, 5, 7, 8])
    norms = torch.linalg.vector_norm(u[:, tr].double(), dim=1)
    assert agg.info["clip_bound"] == pytest.approx(float(torch.sort(norms).values[k - 1]), rel=1e-6)


def test_too_few_clients_is_a_clear_error():
    u = torch.randn(3, 5)
    with pytest.raises(ValueError, match="min_samples"):
        Fedward(variant="authors_code").aggregate(make_input(u))  # m//2 = 1 < 2
    with pytest.raises(ValueError, match="min_samples"):
        Fedward().aggregate(make_input(u[:1]))  # ⌈1/2⌉+1 = 2 > 1


def test_variant_defaults_and_overrides():
    f = Fedward(variant="authors_code")
    assert (f.amgrad, f.min_samples_rule, f.clip, f.all_noise_policy) == ("sparsify", "code", "code", "reject_all")
    f = Fedward()
    assert (f.amgrad, f.min_samples_rule, f.clip, f.all_noise_policy) == ("sign_max", "paper", "paper", "reject_all")
    f = Fedward(amgrad="sparsify")
    assert f.amgrad == "sparsify" and f.clip == "paper"
    assert isinstance(build_defense("fedward", {"variant": "authors_code"}), Fedward)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"variant": "code"}, "variant"),
        ({"amgrad": "ternary"}, "amgrad"),
        ({"min_samples_rule": 3}, "min_samples_rule"),
        ({"clip": "median"}, "clip"),
        ({"all_noise_policy": "keep"}, "all_noise_policy"),
    ],
)
def test_bad_parameters_name_themselves(kwargs, name):
    with pytest.raises(ParameterError, match=name):
        Fedward(**kwargs)
