"""Data-poisoning backdoor: stamp a trigger on the first ``poison_per_batch`` samples of every batch and
relabel them to the target (DBA authors' code, algorithms.md §5; Fedward §3.4).

In a distributed attack (DBA) attacker ``i`` (0-based among the attackers) uses local part ``i`` of the
global trigger; the backdoor accuracy is always measured with the global trigger.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .triggers import Trigger

__all__ = ["BatchPoisoner"]


@dataclass(frozen=True)
class BatchPoisoner:
    """Poison a batch in place of a copy: the first ``per_batch`` samples get ``trigger`` and ``target``."""

    trigger: Trigger
    target: int
    per_batch: int

    def __post_init__(self) -> None:
        if self.per_batch < 0:
            raise ValueError(f"poison_per_batch={self.per_batch} is invalid; must be >= 0")

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        k = min(self.per_batch, x.shape[0])
        if k == 0:
            return x, y
        x = x.clone()
        y = y.clone()
        self.trigger.apply_(x[:k])
        y[:k] = self.target
        return x, y
