import math

import pytest
import torch

from fedshield.metrics import aasr, detection_counts, flame_rates


def test_detection_counts_positive_means_rejected():
    accepted = torch.tensor([True, False, False, True, True])
    malicious = torch.tensor([True, True, False, False, False])
    assert detection_counts(accepted, malicious) == {"tp": 1, "fp": 1, "tn": 2, "fn": 1}


def test_detection_counts_shape_mismatch():
    with pytest.raises(ValueError, match="entries"):
        detection_counts(torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.bool))


def test_flame_rates_as_the_paper_defines_them():
    r = flame_rates(tp=3, fp=1, tn=5, fn=1)
    assert r["flame_tpr"] == pytest.approx(3 / 4)  # TP/(TP+FP)
    assert r["flame_tnr"] == pytest.approx(5 / 6)  # TN/(TN+FN)
    assert r["recall"] == pytest.approx(3 / 4) and r["specificity"] == pytest.approx(5 / 6)
    assert math.isnan(flame_rates(0, 0, 4, 0)["flame_tpr"])


def test_aasr_averages_from_the_attack_start():
    assert aasr({1: 0.0, 4: 0.9, 5: 0.5, 10: 0.7}, start_round=5) == pytest.approx(0.6)
    assert math.isnan(aasr({1: 0.2}, start_round=5))
