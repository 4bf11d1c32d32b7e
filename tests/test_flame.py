"""FLAME (docs/defenses.md, FLAME): known answers on small inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedshield.defenses import ParameterError, RoundInput, build_defense
from fedshield.defenses import flame as flame_mod
from fedshield.defenses.flame import (
    FLAME,
    clip_updates,
    cosine_distances,
    flame_clip_bound,
    lambda_from_dp,
)
from fedshield.models import LayoutEntry, ParamLayout
from roundinput import flat_layout, make_input




def benign_and_attackers(n_benign=7, n_att=3, d=50, seed=0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(d, generator=gen)
    other = torch.randn(d, generator=gen)
    other = other - (other @ base) / (base @ base) * base  # orthogonal direction
    ben = base + 0.05 * torch.randn(n_benign, d, generator=gen)
    att = 3.0 * other + 0.05 * torch.randn(n_att, d, generator=gen)
    return torch.cat([ben, att]), base


# ----------------------------------------------------------------------------------------------- components


def test_cosine_distances_known_values():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    d = cosine_distances(x)
    assert d.dtype == torch.float64
    expected = torch.tensor(
        [
            [0.0, 1.0, 2.0, 1 - 1 / math.sqrt(2)],
            [1.0, 0.0, 1.0, 1 - 1 / math.sqrt(2)],
            [2.0, 1.0, 0.0, 1 + 1 / math.sqrt(2)],
            [1 - 1 / math.sqrt(2), 1 - 1 / math.sqrt(2), 1 + 1 / math.sqrt(2), 0.0],
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(d, expected, atol=1e-12)


def test_clip_bound_is_true_median():
    assert float(flame_clip_bound(torch.tensor([4.0, 1.0, 3.0, 2.0]))) == pytest.approx(2.5)  # not torch's 2.0
    assert float(flame_clip_bound(torch.tensor([5.0, 1.0, 3.0]))) == pytest.approx(3.0)


def test_clip_updates_known_values():
    u = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    c = clip_updates(u, 1.0)
    assert torch.allclose(c, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))


def test_scaling_an_update_keeps_cosine_row_and_clips_to_bound():
    x, _ = benign_and_attackers()
    y = x.clone()
    y[2] *= 100.0
    assert torch.allclose(cosine_distances(x)[2], cosine_distances(y)[2], atol=1e-9)
    norms = torch.linalg.vector_norm(y.double(), dim=1)
    s = flame_clip_bound(norms)
    clipped = clip_updates(y.double(), s, norms)
    assert float(torch.linalg.vector_norm(clipped[2])) == pytest.approx(float(s), rel=1e-9)
    # within the defense (updates clustering) the scaled client is clipped to S_t as well
    agg = FLAME(cluster_on="updates", noise=False, clustering=False).aggregate(make_input(y))
    assert agg.info["clip_bound"] == pytest.approx(float(s), rel=1e-6)


def test_lambda_from_epsilon_delta():
    eps, delta = 3705.0, 1.3e-3
    assert lambda_from_dp(eps, delta) == pytest.approx(math.sqrt(2 * math.log(1.25 / delta)) / eps)
    f = FLAME(epsilon=eps, delta=delta)
    assert f.lam == pytest.approx(1e-3, rel=0.01)  # App. B.3: ε = 3705 ↔ λ ≈ 0.001
    assert FLAME().lam == 0.001
    assert FLAME(lam=0.01).lam == 0.01


# ----------------------------------------------------------------------------------------------- the round


def test_clip_bound_over_all_clients_not_only_admitted():
    x, _ = benign_and_attackers()
    x[:7] *= torch.arange(1.0, 8.0).unsqueeze(1)  # spread the benign norms (cosines unchanged)
    agg = FLAME(cluster_on="updates", noise=False).aggregate(make_input(x))
    assert not bool(agg.accepted[7:].any())
    norms = torch.linalg.vector_norm(x.double(), dim=1)
    all_median = float(np.median(norms.numpy()))
    adm_median = float(np.median(norms[agg.accepted].numpy()))
    assert abs(all_median - adm_median) > 0.1  # the construction makes the two readings differ
    assert agg.info["clip_bound"] == pytest.approx(all_median, rel=1e-6)


def test_malicious_excluded_and_mean_of_clipped():
    for cluster_on in ("models", "updates"):
        x, _ = benign_and_attackers()
        g = torch.full((x.shape[1],), 0.3)
        agg = FLAME(cluster_on=cluster_on, noise=False).aggregate(make_input(x, g=g))
        assert not bool(agg.accepted[7:].any()), cluster_on
        assert int(agg.accepted.sum()) >= 1
        # G + unweighted mean of the admitted clipped updates
        norms = torch.linalg.vector_norm(x.double(), dim=1)
        s = float(np.median(norms.numpy()))
        adm = x[agg.accepted].double()
        scale = torch.clamp(s / norms[agg.accepted], max=1.0)
        expected = g.double() + (adm * scale.unsqueeze(1)).mean(0)
        assert torch.allclose(agg.global_params.double(), expected, atol=1e-5)
        assert agg.info["accepted"] == float(agg.accepted.sum())
        assert agg.info["all_noise"] == 0.0
        assert agg.info["num_clusters"] == 1.0


def test_hdbscan_called_with_paper_parameters(monkeypatch):
    calls = []
    real = flame_mod.HDBSCAN

    def spy(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(flame_mod, "HDBSCAN", spy)
    x, _ = benign_and_attackers()
    agg = FLAME(noise=False).aggregate(make_input(x))
    assert len(calls) == 1
    kw = calls[0]
    assert kw["min_cluster_size"] == 10 // 2 + 1 == 6
    assert kw["min_samples"] == 2  # hdbscan's min_samples=1 (paper) in sklearn's convention
    assert kw["allow_single_cluster"] is True
    assert kw["metric"] == "precomputed"
    assert agg.info["min_cluster_size"] == 6.0


class _AllNoise:
    def __init__(self, **kw):
        pass

    def fit_predict(self, dist):
        return np.full(dist.shape[0], -1)


def test_all_noise_policies(monkeypatch):
    monkeypatch.setattr(flame_mod, "HDBSCAN", _AllNoise)
    x, _ = benign_and_attackers()
    g = torch.full((x.shape[1],), 0.5)
    agg = FLAME(noise=False).aggregate(make_input(x, g=g))
    assert bool(agg.accepted.all()) and agg.info["all_noise"] == 1.0 and agg.info["num_clusters"] == 0.0
    agg = FLAME(noise=False, all_noise_policy="reject_all").aggregate(make_input(x, g=g))
    assert not bool(agg.accepted.any()) and agg.info["all_noise"] == 1.0
    assert torch.equal(agg.global_params, g)


def test_noise_std_is_lambda_times_bound_and_reproducible():
    gen = torch.Generator().manual_seed(3)
    d = 200_000
    x = torch.randn(4, d, generator=gen) * torch.tensor([[1.0], [1.1], [0.9], [1.2]])
    lam = 0.01
    clean = FLAME(lam=lam, noise=False, clustering=False).aggregate(make_input(x, seed=7))
    noisy = FLAME(lam=lam, clustering=False).aggregate(make_input(x, seed=7))
    again = FLAME(lam=lam, clustering=False).aggregate(make_input(x, seed=7))
    s = noisy.info["clip_bound"]
    assert noisy.info["noise_std"] == pytest.approx(lam * s)
    diff = (noisy.global_params - clean.global_params).double()
    assert float(diff.std()) == pytest.approx(lam * s, rel=0.02)
    assert abs(float(diff.mean())) < 0.02 * lam * s
    assert torch.equal(noisy.global_params, again.global_params)
    expected = torch.randn(d, generator=torch.Generator().manual_seed(7)) * (lam * s)
    assert torch.allclose(diff.float(), expected, atol=1e-5 * lam * s + 1e-6)


def test_buffers_excluded_from_norms_and_noise():
    layout = ParamLayout(
        (
            LayoutEntry("w", (2, 3), 0, 6, "weight"),
            LayoutEntry("b", (2,), 6, 2, "bias"),
            LayoutEntry("bn.running_mean", (3,), 8, 3, "buffer"),
        )
    )
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(6, 11, generator=gen) * 0.1 + 1.0
    u[:, 8:] = torch.arange(6, dtype=torch.float32).unsqueeze(1) * 1000.0  # huge buffer changes
    g = torch.zeros(11)
    agg = FLAME(clustering=False, lam=0.1).aggregate(make_input(u, g=g, layout=layout, seed=1))
    norms = torch.linalg.vector_norm(u[:, :8].double(), dim=1)
    assert agg.info["clip_bound"] == pytest.approx(float(np.median(norms.numpy())), rel=1e-6)
    # buffers: plain mean of the admitted clients' values, no clipping, no noise
    assert torch.allclose(agg.global_params[8:], u[:, 8:].mean(0))


def test_switches_off_is_plain_mean():
    x, _ = benign_and_attackers()
    agg = FLAME(clustering=False, clipping=False, noise=False).aggregate(make_input(x))
    assert bool(agg.accepted.all())
    assert torch.allclose(agg.global_params, x.mean(0), atol=1e-6)


def test_registered_and_built_by_name():
    f = build_defense("flame", {"cluster_on": "updates"})
    assert isinstance(f, FLAME) and f.cluster_on == "updates"


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"cluster_on": "gradients"}, "cluster_on"),
        ({"min_cluster_size": 1}, "min_cluster_size"),
        ({"min_cluster_size": 2.5}, "min_cluster_size"),
        ({"min_samples": 0}, "min_samples"),
        ({"allow_single_cluster": False}, "allow_single_cluster"),
        ({"all_noise_policy": "maybe"}, "all_noise_policy"),
        ({"lam": -1.0}, "lam"),
        ({"lam": 0.001, "epsilon": 3705.0, "delta": 1e-3}, "lam"),
        ({"epsilon": 3705.0}, "delta"),
        ({"delta": 1e-3}, "epsilon"),
        ({"epsilon": 0.0, "delta": 1e-3}, "epsilon"),
        ({"epsilon": 10.0, "delta": 2.0}, "delta"),
        ({"noise": "yes"}, "noise"),
        ({"clipping": 1}, "clipping"),
        ({"clustering": None}, "clustering"),
    ],
)
def test_bad_parameters_name_themselves(kwargs, name):
    with pytest.raises(ParameterError, match=name):
        FLAME(**kwargs)


def test_allow_single_cluster_false_explains_why():
    with pytest.raises(ParameterError, match="noise"):
        FLAME(allow_single_cluster=False)


def test_unknown_keyword_via_config():
    with pytest.raises(ParameterError):
        build_defense("flame", {"bogus": 1})


def test_non_finite_update_rejected():
    x, _ = benign_and_attackers()
    x[3, 0] = float("nan")
    with pytest.raises(ValueError, match="3"):
        FLAME().aggregate(make_input(x))
