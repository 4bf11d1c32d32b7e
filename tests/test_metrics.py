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


def test_attacker_admission_by_hand():
    from fedshield.metrics import attacker_admission

    # round 1: attackers 0, 1; 0 rejected -> 1 admitted. round 2: 0, 1; 1 and benign 5 rejected -> 0 admitted.
    # round 3: only 1 attacks, nobody rejected -> 1 admitted. So 0: 1 of 2 rounds, 1: 2 of 3.
    recs = attacker_admission([[0, 1], [1, 0], [1]], [[0], [1, 5], []], samples={0: 386, 1: 813, 7: 5})
    assert recs == [
        {"client": 0, "rounds": 2, "admitted": 1, "admitted_share": 0.5, "samples": 386},
        {"client": 1, "rounds": 3, "admitted": 2, "admitted_share": 2 / 3, "samples": 813},
    ]
    assert attacker_admission([[], []], [[3], []]) == []  # no attacker ever: nothing to report
    assert "samples" not in attacker_admission([[2]], [[]])[0]
    with pytest.raises(ValueError, match="2 rounds of attackers but 1 rounds of rejections"):
        attacker_admission([[0], [0]], [[]])
