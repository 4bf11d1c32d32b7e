"""The round state: everything that changes from round to round of a run, saved in its checkpoint.

The experiment description (:class:`fedshield.sim.setup.Setup`) is frozen; a run is the description plus a
:class:`RoundState` advanced one round at a time, saved and restored by :mod:`fedshield.sim.checkpoint`. Because
every random stream is keyed by (seed, purpose, round, client), no generator position needs saving: the state
after round t and the description determine round t + 1 exactly, so a resumed run produces the same numbers as
an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from torch import Tensor

from ..defenses import Defense

__all__ = ["RoundState"]


@dataclass
class RoundState:
    """Where a run stands after ``round`` rounds (0: none yet).

    ``global_params``: the model the next round starts from; ``previous_global``: the model the last finished
    round started from (attacks that estimate the benign update from the last global change, Neurotoxin, read
    it); ``defense``: the live defense with its history (FoolsGold's, AFA's); ``rows``: the metrics rows so far;
    ``seconds``: wall time spent in finished rounds.
    """

    round: int
    global_params: Tensor
    defense: Defense
    previous_global: Optional[Tensor] = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def advance(self, new_global: Tensor, row: dict[str, Any], seconds: float) -> None:
        """Record one finished round that started from ``global_params`` and produced ``new_global``."""
        self.previous_global = self.global_params
        self.global_params = new_global
        self.round += 1
        self.rows.append(row)
        self.seconds = seconds

