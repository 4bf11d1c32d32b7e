"""Metrics: detection counts per round, FLAME's TPR/TNR, and AASR.

Positive means "flagged as poisoned", i.e. *not accepted* by the defense. Only clients that actually sent a
poisoned update in a round count as malicious in that round (an attacker before its start round is benign).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import Tensor

__all__ = ["detection_counts", "flame_rates", "aasr", "mean_or_nan"]


def detection_counts(accepted: Tensor, malicious: Tensor) -> dict[str, int]:
    """TP/FP/TN/FN of a filtering decision: TP = malicious rejected, FN = malicious accepted, etc."""
    accepted = accepted.to(torch.bool).flatten()
    malicious = malicious.to(torch.bool).flatten()
    if accepted.shape != malicious.shape:
        raise ValueError(f"accepted has {accepted.numel()} entries, malicious has {malicious.numel()}")
    flagged = ~accepted
    return {
        "tp": int((flagged & malicious).sum()),
        "fp": int((flagged & ~malicious).sum()),
        "tn": int((accepted & ~malicious).sum()),
        "fn": int((accepted & malicious).sum()),
    }


def flame_rates(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """FLAME's rates as the paper defines them: TPR = TP/(TP+FP), TNR = TN/(TN+FN); NaN if undefined.

    See docs/defenses.md, Conventions.5.

    These are precision and negative predictive value in the usual vocabulary; the conventional recall and
    specificity are returned too (``recall`` = TP/(TP+FN), ``specificity`` = TN/(TN+FP)).
    """

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    return {
        "flame_tpr": ratio(tp, tp + fp),
        "flame_tnr": ratio(tn, tn + fn),
        "recall": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
    }


def mean_or_nan(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def aasr(ba_by_round: Mapping[int, float], start_round: int) -> float:
    """Average attack success rate: mean BA over the evaluated rounds ``>= start_round`` (NaN if none)."""
    return mean_or_nan(ba for r, ba in ba_by_round.items() if r >= start_round)
