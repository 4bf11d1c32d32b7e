"""FLAME's fast cosine distances (``cosine_distances`` with a float32 symmetric Gram of the updates, model terms
in float64) against the float64 route, on hand-made and on realistic inputs (lenet-sized global model and
updates), and the float64 fallbacks for rows a float32 product would overflow or underflow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.cluster import HDBSCAN

from fedshield.core.numeric import cosine_distances, gram, row_norms
from fedshield.models import build_model, flatten_params

# Documented tolerance: every off-diagonal distance within 1e-4 of the float64 reference *relative to that
# distance* (float32 Gram accumulation; measured about 5e-6 on the realistic inputs below).
REL_TOL = 1e-4


def shifted_cosine_distances(x: torch.Tensor, origin: torch.Tensor | None = None) -> torch.Tensor:
    """The fast route FLAME takes: float32 Gram."""
    return cosine_distances(x, origin, gram_dtype=torch.float32)


def realistic(n: int, attackers: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """lenet's initial model (d = 431,080, ‖G‖ ≈ 14) and updates of norm ≈ 2: benign ones share a direction,
    attackers share another."""
    torch.manual_seed(seed)
    g = flatten_params(build_model("lenet", 1, 10, 28))
    gen = torch.Generator().manual_seed(seed)
    d = g.numel()
    u = 0.002 * torch.randn(d, generator=gen) + 0.0015 * torch.randn(n, d, generator=gen)
    u[:attackers] += 0.003 * torch.randn(d, generator=gen)
    return g, u


def test_known_values_with_and_without_origin():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    origin = torch.tensor([0.5, -0.25])
    ref = cosine_distances(x)
    r2 = 1 / math.sqrt(2)
    assert torch.allclose(shifted_cosine_distances(x), ref, atol=1e-7)
    assert float(shifted_cosine_distances(x)[2, 3]) == pytest.approx(1 + r2, abs=1e-7)
    # rows x - origin shifted back by origin are the points x
    assert torch.allclose(shifted_cosine_distances(x - origin, origin), ref, atol=1e-6)


def test_zero_points_and_diagonal():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    d = shifted_cosine_distances(x)
    assert d.dtype == torch.float64 and torch.equal(d, d.T)
    assert torch.equal(torch.diagonal(d), torch.zeros(3, dtype=torch.float64))
    assert float(d[0, 1]) == 1.0 and float(d[0, 2]) == 1.0 and float(d[1, 2]) == 1.0


def test_reference_route_matches_the_definition():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 40, generator=gen, dtype=torch.float64)
    origin = torch.randn(40, generator=gen, dtype=torch.float64)
    w = x + origin
    unit = w / w.norm(dim=1, keepdim=True)
    want = (1.0 - unit @ unit.T).clamp(0.0, 2.0)
    want.fill_diagonal_(0.0)
    assert torch.allclose(cosine_distances(x, origin), want, atol=1e-12)
    assert torch.allclose(cosine_distances(w), want, atol=1e-12)


def test_huge_and_tiny_rows_take_the_float64_route():
    """Rows near float32's limits: a float32 Gram would give Inf / 0; the distances must be those of the rows."""
    base = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    want = cosine_distances(base)
    for scale in (1e36, 1e-30):
        got = shifted_cosine_distances(base * scale)
        assert bool(torch.isfinite(got).all()) and torch.allclose(got, want, atol=1e-7), scale
    got = shifted_cosine_distances(base * 1e-30, torch.tensor([0.0, 0.0, 1e36]))
    assert torch.allclose(got, torch.zeros(3, 3, dtype=torch.float64), atol=1e-12)  # all points ≈ the origin


def test_row_norms_survive_float32_overflow_and_underflow():
    x = torch.tensor([[3e20, 4e20], [3e-25, 4e-25], [0.0, 0.0], [3.0, 4.0]])
    got = row_norms(x)
    assert got.dtype == torch.float64
    assert got.tolist() == pytest.approx([5e20, 5e-25, 0.0, 5.0], rel=1e-6)


def test_gram_is_symmetric_and_matches_a_float64_product():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 5000, generator=gen)
    g = gram(x)
    ref = x.double() @ x.double().T
    assert g.dtype == torch.float32 and torch.equal(g, g.T)
    assert torch.allclose(g.double(), ref, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("on_models", [True, False])
def test_realistic_inputs_match_the_float64_reference(on_models):
    g, u = realistic(n=24, attackers=5, seed=0)
    ref = cosine_distances(g + u if on_models else u)
    fast = shifted_cosine_distances(u, g if on_models else None)
    off = ~torch.eye(len(u), dtype=torch.bool)
    if on_models:  # full-model cosines are all close to 1: the distances are small
        assert float(ref[off].max()) < 0.05
    rel = ((fast - ref).abs()[off] / ref[off]).max()
    assert float(rel) < REL_TOL


def test_hdbscan_labels_do_not_change():
    for seed, attackers in [(0, 5), (1, 9), (2, 0)]:
        g, u = realistic(n=20, attackers=attackers, seed=seed)
        labels = []
        for dist in (cosine_distances(g + u), shifted_cosine_distances(u, g)):
            h = HDBSCAN(min_cluster_size=11, min_samples=2, metric="precomputed", allow_single_cluster=True, copy=True)
            labels.append(h.fit_predict(dist.numpy()))
        assert np.array_equal(labels[0], labels[1]), seed
        assert (labels[0][attackers:] >= 0).sum() >= 11  # the benign majority forms the cluster
        if attackers:  # the test case is one where clustering does something: the attackers are noise
            assert (labels[0][:attackers] == -1).all()
