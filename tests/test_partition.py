"""Client partitions: known answers via class histograms (docs/partitions.md; fedshield.data.partition)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from fedshield.data import class_histogram, deg_niid, dirichlet, fang_q, iid, partition

L = 10
LABELS = torch.arange(1000) % L  # 100 samples per class, interleaved
RNG_LABELS = torch.randint(0, L, (3000,), generator=torch.Generator().manual_seed(0))


def assert_disjoint(parts: list[Tensor], universe: Tensor | int) -> Tensor:
    """Every sample at most once, all inside ``universe``; returns the union."""
    for p in parts:
        assert p.dtype == torch.int64 and p.dim() == 1
    union = torch.cat(parts)
    assert union.unique().numel() == union.numel(), "a sample was given to two clients"
    allowed = torch.arange(universe) if isinstance(universe, int) else universe
    assert torch.isin(union, allowed).all()
    return union


def same(a: list[Tensor], b: list[Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ----------------------------------------------------------------------------------------------------- iid


def test_iid_equal_sizes_and_full_cover() -> None:
    parts = iid(1003, 10, seed=0)
    union = assert_disjoint(parts, 1003)
    assert torch.equal(union.sort().values, torch.arange(1003))
    assert [len(p) for p in parts] == [101] * 3 + [100] * 7
    assert same(parts, iid(1003, 10, seed=0)) and not same(parts, iid(1003, 10, seed=1))
    hist = class_histogram(LABELS, iid(1000, 10, seed=0), L)
    assert hist.sum().item() == 1000 and hist.max().item() < 30  # no client is dominated by a class


def test_iid_on_index_subset() -> None:
    subset = torch.arange(5, 500, 5)
    parts = iid(subset, 4, seed=3)
    assert torch.equal(assert_disjoint(parts, subset).sort().values, subset)


# ----------------------------------------------------------------------------------------------- deg_niid


def test_deg_niid_half() -> None:
    parts = deg_niid(LABELS, 10, fraction=0.5, seed=0)
    assert_disjoint(parts, 1000)
    hist = class_histogram(LABELS, parts, L)
    assert [len(p) for p in parts] == [100] * 10
    assert (hist.diagonal() >= 50).all()  # client k is in group k, and holds >= 50 of class k
    off_diagonal = hist.sum() - hist.diagonal().sum()
    assert 0 < int(off_diagonal) <= 500


def test_deg_niid_extremes() -> None:
    full = class_histogram(LABELS, deg_niid(LABELS, 10, fraction=1.0, seed=0), L)
    assert torch.equal(full, 100 * torch.eye(L, dtype=torch.int64))
    zero = deg_niid(LABELS, 10, fraction=0.0, seed=0)
    assert torch.equal(torch.cat(zero).sort().values, torch.arange(1000))
    assert class_histogram(LABELS, zero, L).max().item() < 30


def test_deg_niid_groups_round_robin() -> None:
    labels = torch.arange(6000) % L  # 600 per class
    parts = deg_niid(labels, 20, fraction=1.0, seed=1)  # two clients per group, 300 each
    hist = class_histogram(labels, parts, L)
    for k in range(20):
        assert hist[k, k % L] == 300 and hist[k].sum() == 300


def test_deg_niid_class_runs_out() -> None:
    labels = torch.tensor([0] * 10 + [1] * 90)
    parts = deg_niid(labels, 4, fraction=1.0, seed=0, num_classes=2)  # n_c = 25; clients 0, 2 want class 0
    assert_disjoint(parts, 100)
    hist = class_histogram(labels, parts, 2)
    assert [len(p) for p in parts] == [25] * 4
    assert hist[0, 0] == 10 and hist[2, 0] == 0  # client 0 took all 10, client 2 got its 25 from the pool


# ------------------------------------------------------------------------------------------------ dirichlet


def test_dirichlet_disjoint_and_deterministic() -> None:
    parts = dirichlet(RNG_LABELS, 20, alpha=0.5, seed=0)
    union = assert_disjoint(parts, 3000)
    assert union.numel() >= 3000 - 10 * 20  # rounding drops at most ~K/2 per class
    assert same(parts, dirichlet(RNG_LABELS, 20, alpha=0.5, seed=0))
    assert not same(parts, dirichlet(RNG_LABELS, 20, alpha=0.5, seed=1))


def test_dirichlet_small_alpha_is_more_skewed() -> None:
    def mean_max_share(alpha: float) -> float:
        hist = class_histogram(RNG_LABELS, dirichlet(RNG_LABELS, 20, alpha=alpha, seed=0), L).double()
        share = hist / hist.sum(1, keepdim=True).clamp_min(1)
        return float(share.max(1).values.mean())

    skewed, flat = mean_max_share(0.1), mean_max_share(100.0)
    assert skewed > 0.6 and flat < 0.2 and skewed > flat


# -------------------------------------------------------------------------------------------------- fang_q


def test_fang_q_one_puts_samples_in_their_group() -> None:
    parts = fang_q(LABELS, 20, q=1.0, seed=0)
    assert torch.equal(assert_disjoint(parts, 1000).sort().values, torch.arange(1000))
    hist = class_histogram(LABELS, parts, L)
    for k in range(20):
        assert hist[k].sum() == hist[k, k % L] > 0  # client k is in group k % L


def test_fang_q_zero_never_uses_own_group_and_iid_value() -> None:
    hist = class_histogram(LABELS, fang_q(LABELS, 10, q=0.0, seed=0), L)
    assert hist.diagonal().sum() == 0
    labels = torch.arange(20000) % L
    share = class_histogram(labels, fang_q(labels, 10, q=0.1, seed=0), L).double()
    share = share / share.sum(1, keepdim=True)
    assert (share - 0.1).abs().max() < 0.03  # q = 1/L is IID


def test_fang_q_needs_a_client_per_group() -> None:
    with pytest.raises(ValueError, match="num_clients=5 is invalid"):
        fang_q(LABELS, 5, q=0.5, seed=0)


# ------------------------------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize(
    "method, kwargs",
    [("iid", {}), ("dirichlet", {"alpha": 0.5}), ("deg_niid", {"fraction": 0.5}), ("fang_q", {"q": 0.5})],
)
def test_dispatch_on_subset(method: str, kwargs: dict[str, float]) -> None:
    subset = torch.randperm(3000, generator=torch.Generator().manual_seed(1))[:2000]
    parts = partition(RNG_LABELS, 10, method, seed=0, indices=subset, **kwargs)
    assert len(parts) == 10
    assert_disjoint(parts, subset)
    assert same(parts, partition(RNG_LABELS, 10, method, seed=0, indices=subset, **kwargs))
    full = partition(RNG_LABELS, 10, method, seed=0, **kwargs)
    assert_disjoint(full, 3000)


def test_dispatch_matches_direct_calls() -> None:
    assert same(partition(LABELS, 10, "deg_niid", 0, fraction=0.5), deg_niid(LABELS, 10, 0.5, 0))
    assert same(partition(LABELS, 10, "dirichlet", 0, alpha=1.0), dirichlet(LABELS, 10, 1.0, 0))
    assert same(partition(LABELS, 10, "fang_q", 0, q=0.3), fang_q(LABELS, 10, 0.3, 0))
    assert same(partition(LABELS, 10, "iid", 0), iid(1000, 10, 0))


def test_subset_keeps_group_classes() -> None:
    subset = torch.arange(500, 1000)  # 50 of each class
    parts = partition(LABELS, 10, "deg_niid", 0, fraction=1.0, indices=subset)
    hist = class_histogram(LABELS, parts, L)
    assert torch.equal(hist, 50 * torch.eye(L, dtype=torch.int64))
    assert all(bool((p >= 500).all()) for p in parts)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dirichlet(LABELS, 10, alpha=0, seed=0), "alpha=0 is invalid; must be > 0"),
        (lambda: dirichlet(LABELS, 10, alpha=float("nan"), seed=0), "alpha=nan is invalid"),
        (lambda: deg_niid(LABELS, 10, fraction=1.5, seed=0), r"fraction=1.5 is invalid; must be a number in \[0, 1\]"),
        (lambda: fang_q(LABELS, 10, q=-0.1, seed=0), "q=-0.1 is invalid"),
        (lambda: iid(100, 0, seed=0), "num_clients=0 is invalid"),
        (lambda: deg_niid(LABELS, 10, 0.5, 0, num_classes=5), "num_classes=5 is invalid; labels go up to 9"),
        (lambda: partition(LABELS, 10, "shards", 0), "method='shards' is invalid"),
        (lambda: partition(LABELS, 10, "dirichlet", 0), "alpha is required"),
        (lambda: partition(LABELS, 10, "iid", 0, alpha=0.5), "alpha=0.5 is not used"),
        (lambda: partition(LABELS, 10, "iid", 0, indices=torch.tensor([1, 1])), "must not repeat"),
        (lambda: partition(LABELS, 10, "iid", 0, indices=torch.tensor([1000])), r"indices must lie in \[0, 1000\)"),
        (lambda: dirichlet(LABELS.float(), 10, 1.0, 0), "1-D integer tensor"),
        (lambda: class_histogram(LABELS, [torch.arange(20)], 5), "num_classes=5 is invalid"),
    ],
)
def test_errors_name_the_parameter(call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        call()
