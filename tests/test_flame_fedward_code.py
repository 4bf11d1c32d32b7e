"""FLAME's clustering in the hdbscan-library conventions, and the Fedward authors' FLAME (variant fedward_code)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import HDBSCAN

from fedshield.defenses import ParameterError, build_defense
from fedshield.defenses.flame import FLAME, hdbscan_labels, hdbscan_mutual_reachability
from roundinput import make_input

# four points on a line at 0, 1, 3, 7
LINE = np.abs(np.subtract.outer([0.0, 1.0, 3.0, 7.0], [0.0, 1.0, 3.0, 7.0]))

# Ten points of the plane (integer coordinates) on which hdbscan 0.8.44,
# hdbscan.HDBSCAN(min_cluster_size=6, metric="precomputed", allow_single_cluster=True, alpha=a), gives
# [0, -1, 0, 0, -1, -1, -1, 0, 0, 0] for a = 0.9 and [0, -1, 0, 0, 0, -1, -1, 0, 0, 0] for a = 1.0
# (min_samples left at its default, = min_cluster_size, as in the Fedward code).
PLANE = np.array([[12, 6], [2, 19], [17, 11], [10, 9], [12, 19], [19, 1], [19, 13], [7, 10], [11, 8], [5, 12]], float)
PLANE_D = np.sqrt(((PLANE[:, None] - PLANE[None]) ** 2).sum(-1))


def test_mutual_reachability_by_hand():
    # min_samples=1: core = nearest other point = [1, 1, 2, 4]
    mr = hdbscan_mutual_reachability(LINE, 1)
    expected = np.array([[0, 1, 3, 7], [1, 0, 2, 6], [3, 2, 0, 4], [7, 6, 4, 0]], float)
    # off-diagonal max(d, core_i, core_j): (0,1)=max(1,1,1), (1,2)=max(2,1,2), (2,3)=max(4,2,4) ...
    assert np.array_equal(mr, expected)
    # alpha = 0.5 doubles the distances but not the core distances [1, 1, 2, 4]
    mr = hdbscan_mutual_reachability(LINE, 1, alpha=0.5)
    assert np.array_equal(mr, np.array([[0, 2, 6, 14], [2, 0, 4, 12], [6, 4, 0, 8], [14, 12, 8, 0]], float))
    # min_samples=2: core = second-nearest other point = [3, 2, 3, 6]
    mr = hdbscan_mutual_reachability(LINE, 2)
    assert np.array_equal(mr, np.array([[0, 3, 3, 7], [3, 0, 3, 6], [3, 3, 0, 6], [7, 6, 6, 0]], float))
    # min_samples above n - 1 is capped at n - 1 (the farthest point), as the hdbscan library does
    assert np.array_equal(hdbscan_mutual_reachability(LINE, 9), hdbscan_mutual_reachability(LINE, 3))


def test_min_samples_convention_matches_sklearn_plus_one():
    """hdbscan's min_samples=k is sklearn's k+1 (sklearn counts the point itself): same labels at alpha 1."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=(10, 5))
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        for k in (1, 3, 6):
            sk = HDBSCAN(min_cluster_size=6, min_samples=k + 1, metric="precomputed",
                         allow_single_cluster=True, copy=True).fit_predict(d)
            assert np.array_equal(hdbscan_labels(d, 6, k), sk)


def test_alpha_known_answer_from_the_hdbscan_library():
    assert hdbscan_labels(PLANE_D, 6, 6, alpha=0.9).tolist() == [0, -1, 0, 0, -1, -1, -1, 0, 0, 0]
    assert hdbscan_labels(PLANE_D, 6, 6, alpha=1.0).tolist() == [0, -1, 0, 0, 0, -1, -1, 0, 0, 0]
    # sklearn's own alpha rescales every distance, core distances included, so it cannot reproduce the first
    sk = HDBSCAN(min_cluster_size=6, min_samples=7, alpha=0.9, metric="precomputed",
                 allow_single_cluster=True, copy=True).fit_predict(PLANE_D)
    assert sk.tolist() == [0, -1, 0, 0, 0, -1, -1, 0, 0, 0]


def test_agrees_with_the_hdbscan_library_when_installed():
    hdbscan = pytest.importorskip("hdbscan", reason="optional cross-check against the McInnes hdbscan package")
    rng = np.random.default_rng(1)
    for _ in range(50):
        x = rng.normal(size=(10, 30))
        x[: rng.integers(0, 5)] += rng.normal(size=30)
        d = np.clip(1 - (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T, 0, 2)
        d = (d + d.T) / 2
        np.fill_diagonal(d, 0)
        for ms, alpha in ((None, 0.9), (1, 1.0)):
            ref = hdbscan.HDBSCAN(min_cluster_size=6, min_samples=ms, metric="precomputed",
                                  allow_single_cluster=True, alpha=alpha).fit(d.copy()).labels_
            assert np.array_equal(hdbscan_labels(d, 6, 6 if ms is None else ms, alpha), ref)


def test_variant_defaults_and_explicit_values():
    paper, code = FLAME(), FLAME(variant="fedward_code")
    assert (paper.min_samples, paper.hdbscan_alpha, paper.lam) == (1, 1.0, 0.001)
    assert (code.min_samples, code.hdbscan_alpha, code.lam) == (None, 0.9, 1e-4)
    assert code.cluster_on == "models"
    own = FLAME(variant="fedward_code", min_samples=2, hdbscan_alpha=1.0, lam=0.0)
    assert (own.min_samples, own.hdbscan_alpha, own.lam) == (2, 1.0, 0.0)
    f = build_defense("flame", {"variant": "fedward_code"})
    assert isinstance(f, FLAME) and f.variant == "fedward_code"


@pytest.mark.parametrize(
    "kwargs, name",
    [({"variant": "code"}, "variant"), ({"hdbscan_alpha": 0.0}, "hdbscan_alpha"),
     ({"hdbscan_alpha": float("inf")}, "hdbscan_alpha"), ({"min_samples": 0}, "min_samples")],
)
def test_bad_parameters_name_themselves(kwargs, name):
    with pytest.raises(ParameterError, match=name):
        FLAME(**kwargs)


def _spread_benign_and_attackers(seed=0):
    """6 benign clients of varying spread around one direction and 4 close attackers around another."""
    gen = torch.Generator().manual_seed(seed)
    d = 40
    base, other = torch.randn(d, generator=gen), torch.randn(d, generator=gen)
    scale = torch.tensor([0.05, 0.1, 0.2, 0.4, 0.8, 1.6]).unsqueeze(1)
    ben = base + scale * torch.randn(6, d, generator=gen)
    att = base + 0.9 * other + 0.05 * torch.randn(4, d, generator=gen)
    return torch.cat([ben, att])


def test_fedward_code_round_uses_min_samples_equal_min_cluster_size_and_admits_at_least_six():
    x = _spread_benign_and_attackers()
    agg = FLAME(variant="fedward_code", noise=False, cluster_on="updates").aggregate(make_input(x))
    assert agg.info["min_samples"] == 6.0 and agg.info["hdbscan_alpha"] == 0.9
    d = torch.cdist(x.double(), x.double()).numpy()  # any distance: the admitted set is a whole cluster
    assert int(agg.accepted.sum()) >= 6
    # With min_cluster_size 6 of 10 the single cluster holds >= 6 clients, so a benign client left out means
    # an attacker let in (6 benign, 4 attackers).
    for dist in (d, np.asarray(PLANE_D)):
        for ms, alpha in ((1, 1.0), (6, 0.9), (6, 1.0)):
            labels = hdbscan_labels(dist, 6, ms, alpha)
            assert (labels == 0).sum() >= 6 and set(labels.tolist()) <= {0, -1}


@pytest.mark.parametrize(
    "params, name",
    [({"variant": "fedward"}, "variant"), ({"variant": ["paper"]}, "variant"), ({"hdbscan_alpha": 0}, "hdbscan_alpha"),
     ({"hdbscan_alpha": "0.9"}, "hdbscan_alpha"), ({"min_samples": 1.5}, "min_samples"),
     ({"min_samples": True}, "min_samples")],
)
def test_bad_new_parameters_fail_when_the_config_loads(params, name):
    """variant, hdbscan_alpha and min_samples are declared parameters: refused at config load, naming the key."""
    from fedshield.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=name):
        config_from_dict({"defense": {"name": "flame", "params": params}})
    cfg = config_from_dict({"defense": {"name": "flame", "params": {"variant": "fedward_code", "min_samples": None}}})
    assert cfg.defense.params["variant"] == "fedward_code"
