"""A defense that starts at a given round; before it, plain federated averaging.

The Fedward authors apply every defense of their Table I only in attack rounds and average the local models
(unweighted, no clipping, no noise) in the rounds before (repository zkya/FEDWARD: ``main_flame.py`` lines 48,
53 and 108-117; ``main_flex_fedward.py`` lines 53, 57 and 113-121). That is part of the experiment's schedule,
not of any one defense, so it is one config key for every defense (``defense.from_round``) and one wrapper here.

The wrapper decides from ``RoundInput.round`` alone: the server knows its own schedule in advance, as the
authors' code does (``attack_epoch_in`` is a fixed setting). Nothing tells a defense whether a round is attacked.
"""

from __future__ import annotations

import torch

from .base import Aggregate, Defense, RoundInput, require

__all__ = ["DefendFromRound", "scheduled"]


class DefendFromRound(Defense):
    """``inner`` from round ``from_round`` on; before it G_t = G_{t−1} + (1/n) Σ_i Δ_i, every client admitted.

    ``info["defended"]`` is 1.0 in rounds the inner defense ran, 0.0 otherwise. ``from_round = 1`` is the inner
    defense unchanged (every round).
    """

    name = "defend_from_round"  # not registered: built from the config key defense.from_round
    summary = "plain unweighted FedAvg before a given round, the wrapped defense from then on"
    paper = "schedule of the Fedward authors' code (zkya/FEDWARD main_flame.py, main_flex_fedward.py)"

    def __init__(self, inner: Defense, from_round: int):
        require(isinstance(inner, Defense), "inner", inner, "must be a Defense")
        require(
            isinstance(from_round, int) and not isinstance(from_round, bool) and from_round >= 1,
            "from_round", from_round, "allowed: an integer >= 1",
        )
        self.inner = inner
        self.from_round = int(from_round)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        if inp.round >= self.from_round:
            agg = self.inner.aggregate(inp)
            return Aggregate(agg.global_params, agg.accepted, {**agg.info, "defended": 1.0})
        new = inp.global_params + inp.updates.mean(dim=0)
        accepted = torch.ones(inp.n, dtype=torch.bool)
        return Aggregate(new, accepted, {"accepted": float(inp.n), "defended": 0.0})


def scheduled(defense: Defense, from_round: int) -> Defense:
    """``defense`` itself when ``from_round`` is 1 (every round), else :class:`DefendFromRound` around it."""
    return defense if from_round == 1 else DefendFromRound(defense, from_round)
