"""core.numeric.finite_rows: exact per-row finiteness from one reduction pass."""

import torch

from fedshield.core.numeric import finite_rows


def test_finite_rows_is_exact_on_nan_inf_and_overflowing_sums():
    x = torch.zeros(6, 5)
    x[1, 2] = float("nan")
    x[2, 0] = float("inf")
    x[3, 0], x[3, 1] = float("inf"), float("-inf")  # sums to NaN
    x[4] = 3e38  # every entry finite, the float32 sum overflows to Inf: still a finite row
    x[5, 4] = -float("inf")
    assert finite_rows(x).tolist() == [True, False, False, False, True, False]
    assert torch.equal(finite_rows(x), torch.isfinite(x).all(dim=1))


def test_finite_rows_matches_the_elementwise_check_on_random_matrices():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x = torch.randn(7, 33, generator=g) * 1e37
        bad = torch.rand(7, 33, generator=g) < 0.01
        x[bad] = float("nan")
        assert torch.equal(finite_rows(x), torch.isfinite(x).all(dim=1))
