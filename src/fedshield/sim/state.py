"""The round state: everything that changes from round to round of a run, saved in its checkpoint.

The experiment description (:class:`fedshield.sim.setup.Setup`) is frozen; a run is the description plus a
:class:`RoundState` advanced one round at a time. Because every random stream is keyed by (seed, purpose,
round, client), no generator position needs saving: the state after round t and the description determine
round t + 1 exactly, so a resumed run produces the same numbers as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from ..config import ConfigError
from ..defenses import Defense
from .output import atomic_torch_save

__all__ = ["RoundState", "save_checkpoint", "load_checkpoint"]


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


def save_checkpoint(path: str | Path, state: RoundState, start_params: Tensor, config_text: str) -> None:
    """Write ``state`` atomically with what a resume must match (the start model and the resolved config)."""
    atomic_torch_save(
        {
            "round": state.round,
            "global_params": state.global_params,
            "previous_global": state.previous_global,
            "defense": state.defense,
            "rows": state.rows,
            "seconds": state.seconds,
            "initial_params": start_params,
            "config": config_text,
        },
        path,
    )


def load_checkpoint(path: str | Path, start_params: Tensor, config_text: str) -> RoundState:
    """The :class:`RoundState` saved in ``path``; :class:`ConfigError` if it belongs to another experiment."""
    path = Path(path)
    saved = torch.load(path, weights_only=False)
    if saved["config"] != config_text:
        raise ConfigError(f"{path.parent}: the checkpoint was made with a different config; refusing to resume")
    if not torch.equal(saved["initial_params"], start_params):
        raise ConfigError(f"{path.parent}: initial model differs from the checkpoint's; refusing to resume")
    return RoundState(
        round=saved["round"],
        global_params=saved["global_params"],
        defense=saved["defense"],
        previous_global=saved.get("previous_global"),
        rows=saved["rows"],
        seconds=saved.get("seconds", 0.0),
    )
