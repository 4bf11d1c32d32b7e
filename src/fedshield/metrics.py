"""Metrics: detection counts per round, FLAME's TPR/TNR, and AASR.

Positive means "flagged as poisoned", i.e. *not accepted* by the defense. Only clients that actually sent a
poisoned update in a round count as malicious in that round (an attacker before its start round is benign).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional

import torch
from torch import Tensor

__all__ = ["detection_counts", "flame_rates", "aasr", "mean_or_nan", "intrusion_detection_rates", "attacker_admission"]


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


def attacker_admission(
    malicious_by_round: Iterable[Iterable[int]],
    rejected_by_round: Iterable[Iterable[int]],
    samples: Optional[Mapping[int, int]] = None,
) -> list[dict[str, Any]]:
    """Which attackers a defense let in: one record per client that sent a poisoned update in some round.

    ``malicious_by_round[t]`` are the ids of round t's attacking clients, ``rejected_by_round[t]`` the ids the
    defense left out (dropped non-finite updates count as rejected: they were not aggregated). A record holds
    ``client``, ``rounds`` (rounds it attacked), ``admitted`` (of those, rounds the defense kept its update),
    ``admitted_share`` = admitted / rounds and, when ``samples`` is given, ``samples`` (its local dataset size).
    Summed over clients, ``admitted`` is the run's FN count. Sorted by client id.
    """
    rounds: dict[int, int] = {}
    admitted: dict[int, int] = {}
    mal_rounds = [list(m) for m in malicious_by_round]
    rej_rounds = [set(r) for r in rejected_by_round]
    if len(mal_rounds) != len(rej_rounds):
        raise ValueError(f"{len(mal_rounds)} rounds of attackers but {len(rej_rounds)} rounds of rejections")
    for mal, rej in zip(mal_rounds, rej_rounds):
        for c in mal:
            rounds[c] = rounds.get(c, 0) + 1
            admitted[c] = admitted.get(c, 0) + (c not in rej)
    out = []
    for c in sorted(rounds):
        rec: dict[str, Any] = {"client": c, "rounds": rounds[c], "admitted": admitted[c],
                               "admitted_share": admitted[c] / rounds[c]}
        if samples is not None and c in samples:
            rec["samples"] = int(samples[c])
        out.append(rec)
    return out


def mean_or_nan(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def aasr(ba_by_round: Mapping[int, float], start_round: int) -> float:
    """Average attack success rate: mean BA over the evaluated rounds ``>= start_round`` (NaN if none)."""
    return mean_or_nan(ba for r, ba in ba_by_round.items() if r >= start_round)


def intrusion_detection_rates(predicted: Tensor, true: Tensor, benign_label: int = 0) -> dict[str, float]:
    """An intrusion detector's rates, "attack" (any label ≠ ``benign_label``) being the positive class:

    * ``detection_rate`` = TP / (TP + FN), the share of attack flows called an attack (recall);
    * ``fpr`` = FP / (FP + TN), the share of benign flows called an attack (false-positive rate);
    * ``f1`` = 2·TP / (2·TP + FP + FN).

    With multi-class labels a flow counts as detected when it is called any attack family. NaN if undefined.
    """
    predicted, true = predicted.flatten(), true.flatten()
    if predicted.shape != true.shape:
        raise ValueError(f"predicted has {predicted.numel()} entries, true has {true.numel()}")
    p_att, t_att = predicted != benign_label, true != benign_label
    tp = int((p_att & t_att).sum())
    fp = int((p_att & ~t_att).sum())
    fn = int((~p_att & t_att).sum())
    tn = int((~p_att & ~t_att).sum())
    nan = float("nan")
    return {
        "detection_rate": tp / (tp + fn) if tp + fn else nan,
        "fpr": fp / (fp + tn) if fp + tn else nan,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan,
    }
