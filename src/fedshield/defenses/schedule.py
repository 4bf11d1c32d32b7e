"""A defense that starts at a given round; before it, plain federated averaging.

The Fedward authors apply every defense of their Table I only in attack rounds and average the local models
(unweighted, no clipping, no noise) in the rounds before (repository zkya/FEDWARD: ``main_flame.py`` lines 48,
53 and 108-117; ``main_flex_fedward.py`` lines 53, 57 and 113-121). That is part of the experiment's schedule,
not of any one defense, so it is one config key for every defense (``defense.from_round``) and one wrapper here
(docs/defenses.md, Conventions.2; docs/defenses.md, Fedward.5).

The wrapper decides from ``RoundInput.round`` alone: the server knows its own schedule in advance, as the
authors' code does (``attack_epoch_in`` is a fixed setting). Nothing tells a defense whether a round is attacked.
"""

from __future__ import annotations

from ..core.numeric import is_int
from .base import Aggregate, Defense, RoundInput, require
from .fedavg import FedAvg

__all__ = ["DefendFromRound", "scheduled"]


class DefendFromRound(Defense):
    """``inner`` from round ``from_round`` on; before it G_t = G_{t−1} + (1/n) Σ_i Δ_i, every client admitted
    (``FedAvg(weighting="uniform")``). Both keep their state in this object, so a checkpoint saves it
    (:func:`fedshield.sim.checkpoint.defense_state` saves a held defense's state nested).

    ``info["defended"]`` is 1.0 in rounds the inner defense ran, 0.0 otherwise. ``from_round = 1`` is the inner
    defense unchanged (every round).
    """

    name = "defend_from_round"  # not registered: built from the config key defense.from_round
    summary = "plain unweighted FedAvg before a given round, the wrapped defense from then on"
    paper = "schedule of the Fedward authors' code (zkya/FEDWARD main_flame.py, main_flex_fedward.py)"

    def __init__(self, inner: Defense, from_round: int):
        require(isinstance(inner, Defense), "inner", inner, "must be a Defense")
        require(is_int(from_round) and from_round >= 1, "from_round", from_round, "allowed: an integer >= 1")
        self.inner = inner
        self.before = FedAvg(weighting="uniform")
        self.from_round = int(from_round)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        defended = inp.round >= self.from_round
        agg = (self.inner if defended else self.before).aggregate(inp)
        return Aggregate(agg.global_params, agg.accepted, {**agg.info, "defended": float(defended)})


def scheduled(defense: Defense, from_round: int) -> Defense:
    """``defense`` itself when ``from_round`` is 1 (every round), else :class:`DefendFromRound` around it."""
    return defense if from_round == 1 else DefendFromRound(defense, from_round)
