"""Baseline defenses (docs/defenses.md): known answers on small inputs a reader can check by hand."""

from __future__ import annotations

import pickle

import pytest
import torch

from fedshield.defenses import ParameterError, RoundInput, available_defenses, build_defense
from fedshield.core.numeric import two_means_1d
from fedshield.defenses.bulyan import central_mean
from fedshield.defenses.krum import krum_scores, pairwise_sq_distances
from fedshield.models import LayoutEntry, ParamLayout
from roundinput import flat_layout, make_input

BASELINES = [
    "krum", "multi_krum", "bulyan", "median", "trimmed_mean", "geomed", "norm_clipping", "weak_dp", "rlr",
    "foolsgold", "afa", "auror",
]


# Five 2-D points: a square's corners a, b, c around e = (1, 1) and a far outlier.
POINTS = [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [10.0, 10.0]]


# ------------------------------------------------------------------------------------------------ registry


def test_all_registered_with_summary_and_paper():
    reg = available_defenses()
    for name in BASELINES:
        cls = reg[name]
        assert cls.summary and "\n" not in cls.summary and cls.paper
        d = build_defense(name)
        assert repr(d).startswith(type(d).__name__)
    with pytest.raises(ParameterError, match="krum"):
        build_defense("krum", {"bogus": 1})


# ------------------------------------------------------------------------------------------------ Krum


def test_pairwise_sq_distances_match_cdist():
    x = torch.randn(6, 13, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(pairwise_sq_distances(x), torch.cdist(x.double(), x.double()) ** 2, atol=1e-9)


def test_krum_known_answer():
    # f = 1, n = 5 → n − f − 2 = 2 nearest neighbours, squared distances:
    #   a=(0,0): e 2, b 4 → 6;  b=(2,0): e 2, a 4 → 6;  c=(0,2): e 2, a 4 → 6;
    #   e=(1,1): a 2, b 2 → 4 (minimum);  o=(10,10): e 162, b 164 → 326.
    scores = krum_scores(pairwise_sq_distances(torch.tensor(POINTS)), 2)
    assert scores.tolist() == pytest.approx([6.0, 6.0, 6.0, 4.0, 326.0])
    out = build_defense("krum", {"f": 1}).aggregate(make_input(POINTS, g=[5.0, 5.0]))
    assert out.accepted.tolist() == [False, False, False, True, False]
    assert out.global_params.tolist() == pytest.approx([6.0, 6.0])
    assert out.info["selected"] == 3.0 and out.info["min_score"] == pytest.approx(4.0)
    # plain distances (FLAIN code): e scores 2·sqrt(2) ≈ 2.83 < a's sqrt(2) + 2 ≈ 3.41: same choice
    out = build_defense("krum", {"f": 1, "squared": False}).aggregate(make_input(POINTS))
    assert out.accepted.tolist() == [False, False, False, True, False]


def test_multi_krum_m2_and_m_equals_n_is_mean():
    # m = 2: e (score 4) then the tie a/b/c (score 6) → smallest index a; mean of e and a = (0.5, 0.5)
    out = build_defense("multi_krum", {"f": 1, "m": 2}).aggregate(make_input(POINTS))
    assert out.accepted.tolist() == [True, False, False, True, False]
    assert out.global_params.tolist() == pytest.approx([0.5, 0.5])
    out = build_defense("multi_krum", {"f": 1, "m": 5}).aggregate(make_input(POINTS))
    assert out.accepted.all()
    assert out.global_params.tolist() == pytest.approx(torch.tensor(POINTS).mean(0).tolist())
    # default m = n − f = 4 drops the outlier
    out = build_defense("multi_krum").aggregate(make_input(POINTS))
    assert out.accepted.tolist() == [True, True, True, True, False]


def test_krum_impossible_f_names_f_and_n():
    with pytest.raises(ValueError, match=r"f=1.*n=4"):
        build_defense("krum", {"f": 1}).aggregate(make_input(POINTS[:4]))
    with pytest.raises(ValueError, match=r"m=6.*n=5"):
        build_defense("multi_krum", {"m": 6}).aggregate(make_input(POINTS))
    with pytest.raises(ParameterError, match="f=-1"):
        build_defense("krum", {"f": -1})
    with pytest.raises(ParameterError, match="m=0"):
        build_defense("multi_krum", {"m": 0})


def test_krum_buffers_follow_selected_client():
    layout = ParamLayout((LayoutEntry("w", (2,), 0, 2, "weight"), LayoutEntry("bn.running_mean", (1,), 2, 1, "buffer")))
    # the buffer column would change the choice if it entered the distances (client 4's buffer is tiny)
    ups = [p + [b] for p, b in zip(POINTS, [50.0, 60.0, 70.0, 80.0, 1.0])]
    out = build_defense("krum").aggregate(make_input(ups, layout=layout))
    assert out.accepted.tolist() == [False, False, False, True, False]
    assert out.global_params.tolist() == pytest.approx([1.0, 1.0, 80.0])


# ------------------------------------------------------------------------------------------------ Bulyan


def test_bulyan_known_answer():
    # n = 7, f = 1 → θ = 5, β = 3. 1-D values 0, 1, 2, 3, 7, 100, −100. Recursive Krum (squared):
    #   r=7, 4 neighbours: scores 0:63, 1:42, 2:31, 3:30, 7:126 → pick 3
    #   r=6, 3: 0:54, 1:38, 2:30, 7:110 → pick 2;   r=5, 2: 0:50, 1:37, 7:85 → pick 1
    #   r=4, 1: 0:49, 7:49 (tie → 0);   r=3, floored at 1: 7 and 100 tie at 93² → 7
    # selected {0,1,2,3,7}; median 2; the 3 closest are 1, 2, 3 → mean 2.0 (their plain mean would be 2.6)
    vals = [[0.0], [1.0], [2.0], [3.0], [7.0], [100.0], [-100.0]]
    out = build_defense("bulyan", {"f": 1}).aggregate(make_input(vals))
    assert out.accepted.tolist() == [True] * 5 + [False, False]
    assert out.global_params.tolist() == pytest.approx([2.0])
    assert out.info["theta"] == 5.0 and out.info["beta"] == 3.0


def test_central_mean_per_coordinate():
    x = torch.tensor([[0.0, 10.0], [1.0, 0.0], [2.0, 1.0], [3.0, 2.0], [7.0, 3.0]])
    # column 0: median 2 → {1,2,3} → 2;  column 1: median 2 → {1,2,3} → 2
    assert central_mean(x, 3).tolist() == pytest.approx([2.0, 2.0])


def test_bulyan_impossible_f():
    with pytest.raises(ValueError, match=r"f=1.*n=6"):
        build_defense("bulyan", {"f": 1}).aggregate(make_input(torch.zeros(6, 2)))
    with pytest.raises(ParameterError, match="f="):
        build_defense("bulyan", {"f": 1.5})


# ------------------------------------------------------------------------------------------------ median / trimmed mean


def test_median_odd_and_even():
    out = build_defense("median").aggregate(make_input([[1.0, 5.0], [2.0, -1.0], [100.0, 0.0]]))
    assert out.global_params.tolist() == pytest.approx([2.0, 0.0]) and out.accepted.all()
    # even n: mean of the two middle values (torch.median would give 2)
    out = build_defense("median").aggregate(make_input([[1.0], [2.0], [10.0], [20.0]]))
    assert out.global_params.tolist() == pytest.approx([6.0])


def test_median_buffers_plain_mean():
    layout = ParamLayout((LayoutEntry("w", (1,), 0, 1, "weight"), LayoutEntry("bn.running_var", (1,), 1, 1, "buffer")))
    out = build_defense("median").aggregate(make_input([[1.0, 0.0], [2.0, 0.0], [9.0, 3.0]], layout=layout))
    assert out.global_params.tolist() == pytest.approx([2.0, 1.0])


def test_trimmed_mean_beta_and_trim():
    vals = [[1.0], [2.0], [3.0], [100.0], [-50.0]]
    out = build_defense("trimmed_mean", {"beta": 0.2}).aggregate(make_input(vals))  # ⌊0.2·5⌋ = 1 each side
    assert out.global_params.tolist() == pytest.approx([2.0]) and out.info["trimmed_per_side"] == 1.0
    out = build_defense("trimmed_mean", {"trim": 1}).aggregate(make_input(vals))
    assert out.global_params.tolist() == pytest.approx([2.0])
    out = build_defense("trimmed_mean", {"beta": 0.0}).aggregate(make_input(vals))
    assert out.global_params.tolist() == pytest.approx([56.0 / 5])
    out = build_defense("trimmed_mean", {"beta": 0.3}).aggregate(make_input(torch.arange(10.0).unsqueeze(1)))
    assert out.info["trimmed_per_side"] == 3.0  # ⌊0.3·10⌋ = 3 despite 0.3·10 = 2.9999…


def test_trimmed_mean_parameter_errors():
    with pytest.raises(ParameterError, match="beta.*trim"):
        build_defense("trimmed_mean", {"beta": 0.1, "trim": 1})
    with pytest.raises(ParameterError, match="beta=0.5"):
        build_defense("trimmed_mean", {"beta": 0.5})
    with pytest.raises(ParameterError, match="trim=-1"):
        build_defense("trimmed_mean", {"trim": -1})
    with pytest.raises(ValueError, match=r"trim=2.*n=4"):
        build_defense("trimmed_mean", {"trim": 2}).aggregate(make_input(torch.zeros(4, 1)))


# ------------------------------------------------------------------------------------------------ geometric median


def test_geomed_collinear_middle_and_outlier():
    out = build_defense("geomed", {"weighting": "uniform"}).aggregate(make_input([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))
    assert out.global_params.tolist() == pytest.approx([1.0, 1.0], abs=1e-4)
    pts = [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [100.0, 100.0]]
    out = build_defense("geomed").aggregate(make_input(pts))
    assert torch.linalg.vector_norm(out.global_params) < 0.5  # the mean is ≈ (20, 20)
    assert 1 <= out.info["iterations"] <= 100 and out.info["objective"] > 0
    assert out.accepted.all()


def test_geomed_sample_weights_and_params():
    # one point carries most of the weight → the weighted geometric median is that point
    out = build_defense("geomed").aggregate(make_input([[0.0], [1.0], [5.0]], num_samples=[1, 10, 1]))
    assert out.global_params.tolist() == pytest.approx([1.0], abs=1e-4)
    with pytest.raises(ParameterError, match="nu"):
        build_defense("geomed", {"nu": 0.0})
    with pytest.raises(ParameterError, match="max_iter"):
        build_defense("geomed", {"max_iter": 0})


# ------------------------------------------------------------------------------------------------ norm clipping / weak DP


def test_norm_clipping_known_answer():
    out = build_defense("norm_clipping", {"norm_bound": 1.0}).aggregate(make_input([[3.0, 4.0]]))
    assert out.global_params.tolist() == pytest.approx([0.6, 0.8])
    out = build_defense("norm_clipping", {"norm_bound": 1.0, "weighting": "uniform"}).aggregate(
        make_input([[3.0, 4.0], [0.3, 0.4]])
    )
    assert out.global_params.tolist() == pytest.approx([0.45, 0.6])  # (0.6+0.3)/2, (0.8+0.4)/2
    assert out.info["clipped"] == 1.0
    with pytest.raises(ParameterError, match="norm_bound=-1"):
        build_defense("norm_clipping", {"norm_bound": -1.0})


def test_weak_dp_noise_std_and_determinism():
    d = 20000
    d_ = build_defense("weak_dp")
    assert d_.norm_bound == 2.0 and d_.noise_std == 0.025
    inp = make_input(torch.zeros(3, d), seed=7)
    a = d_.aggregate(inp).global_params
    b = d_.aggregate(make_input(torch.zeros(3, d), seed=7)).global_params
    assert torch.equal(a, b)
    assert float(a.std()) == pytest.approx(0.025, rel=0.03)


# ------------------------------------------------------------------------------------------------ RLR


def test_rlr_flips_weak_agreement():
    ups = [[1.0, 2.0], [1.0, 2.0], [1.0, -1.0], [1.0, -1.0]]
    # coordinate 0: |Σ sgn| = 4 ≥ θ = 3 → +1;  coordinate 1: |Σ sgn| = 0 < 3 → −1; mean = (1, 0.5)
    out = build_defense("rlr", {"threshold": 3}).aggregate(make_input(ups))
    assert out.global_params.tolist() == pytest.approx([1.0, -0.5])
    assert out.info["flipped_share"] == 0.5 and out.accepted.all()
    with pytest.raises(ValueError, match=r"threshold=5.*n=4"):
        build_defense("rlr", {"threshold": 5}).aggregate(make_input(ups))
    with pytest.raises(ParameterError, match="threshold=0"):
        build_defense("rlr", {"threshold": 0})


# ------------------------------------------------------------------------------------------------ FoolsGold


def test_foolsgold_sybils_get_zero_weight():
    gen = torch.Generator().manual_seed(3)
    d = 200
    fg = build_defense("foolsgold")
    sybil_dir = torch.randn(d, generator=gen)
    for rnd in range(1, 4):
        honest = torch.randn(3, d, generator=gen)
        sybils = sybil_dir + 0.01 * torch.randn(2, d, generator=gen)
        out = fg.aggregate(make_input(torch.cat([honest, sybils]), client_ids=[10, 11, 12, 20, 21], rnd=rnd))
    assert out.accepted.tolist() == [True, True, True, False, False]
    assert out.info["num_zero_weight"] == 2.0 and out.info["min_weight"] == 0.0 and out.info["max_weight"] > 0
    assert set(fg.history) == {10, 11, 12, 20, 21}
    clone = pickle.loads(pickle.dumps(fg))
    assert torch.equal(clone.history[20], fg.history[20])


def test_foolsgold_sum_vs_normalized():
    # two orthogonal clients: cs = 0 → w = 1 → 0.99 → logit ln(99) + 0.5 > 1 → 1 each
    ups = [[1.0, 0.0], [0.0, 2.0]]
    out = build_defense("foolsgold", {"normalize": False}).aggregate(make_input(ups))
    assert out.global_params.tolist() == pytest.approx([1.0, 2.0])  # Σ w_k Δ_k
    out = build_defense("foolsgold").aggregate(make_input(ups))  # default: Σ w_k Δ_k / Σ w_k
    assert out.global_params.tolist() == pytest.approx([0.5, 1.0])


# ------------------------------------------------------------------------------------------------ AFA


def _afa_round(d=20):
    # 9 honest clients 1 + 0.5·e_i (i = 0..8): by symmetry all have the same cosine to any mean of them, so the
    # spread among them is 0; one attacker sends −1. Iteration 1: sims ≈ 0.99 (×9) and ≈ −0.99, σ ≈ 0.6, and
    # μ < median → everything below 0.99 − 2σ ≈ −0.2 goes: the attacker. Iteration 2: σ = 0 → stop.
    honest = torch.ones(9, d) + 0.5 * torch.eye(9, d)
    return torch.cat([honest, -torch.ones(1, d)])


def test_afa_removes_outlier_and_blocks_it():
    afa = build_defense("afa")
    out = afa.aggregate(make_input(_afa_round()))
    assert out.accepted.tolist() == [True] * 9 + [False]
    assert out.info["removed"] == 1.0
    # prior Beta(3, 3): after k removals P(p < 0.5) = I_0.5(3, 3 + k); k = 5 → 0.945, k = 6 → 0.967 > 0.95
    for rnd in range(2, 7):
        out = afa.aggregate(make_input(_afa_round(), rnd=rnd))
    assert out.info["newly_blocked"] == 1.0 and afa.blocked == {9: 6}
    out = afa.aggregate(make_input(_afa_round(), rnd=7))
    assert out.info["skipped_blocked"] == 1.0 and not out.accepted[9] and out.accepted[:9].all()
    clone = pickle.loads(pickle.dumps(afa))
    assert clone.blocked == afa.blocked


# ------------------------------------------------------------------------------------------------ Auror


def test_two_means_1d_matches_brute_force():
    x = torch.randn(7, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    order, split, gap = two_means_1d(x)
    for c in range(x.shape[1]):
        v = torch.sort(x[:, c]).values
        sse = [float(((v[:s] - v[:s].mean()) ** 2).sum() + ((v[s:] - v[s:].mean()) ** 2).sum()) for s in range(1, 7)]
        s_best = 1 + min(range(6), key=lambda i: sse[i])
        assert int(split[c]) == s_best
        assert float(gap[c]) == pytest.approx(float(v[s_best:].mean() - v[:s_best].mean()))


def test_auror_flags_client_that_differs_on_many_coordinates():
    gen = torch.Generator().manual_seed(4)
    ups = 0.001 * torch.randn(5, 20, generator=gen)
    ups[2, :15] += 1.0  # client 2 differs on 15 of 20 coordinates
    out = build_defense("auror").aggregate(make_input(ups))
    assert out.accepted.tolist() == [True, True, False, True, True]
    assert out.info["indicative"] == 15.0 and out.info["flagged"] == 1.0
    expected = ups[[0, 1, 3, 4]].mean(0)
    assert torch.allclose(out.global_params, expected, atol=1e-6)
    # nothing indicative → everyone accepted
    out = build_defense("auror").aggregate(make_input(0.001 * torch.randn(5, 20, generator=gen)))
    assert out.accepted.all() and out.info["indicative"] == 0.0
    # sampled features come from inp.generator and are reproducible
    a = build_defense("auror", {"max_features": 10}).aggregate(make_input(ups, seed=1))
    assert a.info["features"] == 10.0
    with pytest.raises(ParameterError, match="tau"):
        build_defense("auror", {"tau": 1.0})
