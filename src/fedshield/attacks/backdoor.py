"""Per-batch data poisoning.

* :class:`BatchPoisoner`: stamp a trigger on the first ``poison_per_batch`` samples of every batch and relabel
  them to the target (DBA authors' code, docs/attacks.md, Sources.1;
  Fedward's code, docs/defenses.md, Fedward.5). In a distributed attack (DBA)
  attacker ``i`` (0-based among the attackers) uses local part ``i`` of the global trigger; the backdoor
  accuracy is always measured with the global trigger. ``fraction`` (model alignment, FLAME §7) replaces the
  fixed count by ``round(fraction · batch length)``.
* :class:`SubstitutePoisoner`: swap the first k samples of every batch for samples drawn from a pool of real
  backdoor images (semantic and edge-case backdoors; Bagdasaryan et al. swap c backdoor images into each batch).
* :func:`flip_labels`: l → L − l − 1 (label flipping, Fang et al. / FLTrust).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["BatchPoisoner", "SubstitutePoisoner", "flip_labels"]


def _count(per_batch: int, fraction: Optional[float], n: int) -> int:
    k = per_batch if fraction is None else int(round(fraction * n))
    return max(0, min(k, n))


@dataclass(frozen=True)
class BatchPoisoner:
    """Poison a batch in place of a copy: the first ``per_batch`` samples get ``trigger`` and ``target``."""

    trigger: Any  # Trigger or BlendTrigger: anything with apply_(images)
    target: int
    per_batch: int
    fraction: Optional[float] = None

    def __post_init__(self) -> None:
        if self.per_batch < 0:
            raise ValueError(f"poison_per_batch={self.per_batch} is invalid; must be >= 0")
        if self.fraction is not None and not 0 <= self.fraction <= 1:
            raise ValueError(f"fraction={self.fraction} is invalid; must be in [0, 1]")

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        k = _count(self.per_batch, self.fraction, x.shape[0])
        if k == 0:
            return x, y
        x = x.clone()
        y = y.clone()
        self.trigger.apply_(x[:k])
        y[:k] = self.target
        return x, y


@dataclass(frozen=True, eq=False)
class SubstitutePoisoner:
    """Replace the first k samples of each batch with images drawn uniformly (with replacement) from ``pool``,
    labelled ``target``. Draws come from ``generator`` (the client's per-round stream)."""

    pool: Tensor
    target: int
    per_batch: int
    generator: torch.Generator
    fraction: Optional[float] = None

    def __post_init__(self) -> None:
        if len(self.pool) == 0:
            raise ValueError("a substitution poisoner needs a non-empty pool of backdoor images")

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        k = _count(self.per_batch, self.fraction, x.shape[0])
        if k == 0:
            return x, y
        pick = torch.randint(len(self.pool), (k,), generator=self.generator)
        x = x.clone()
        y = y.clone()
        x[:k] = self.pool[pick]
        y[:k] = self.target
        return x, y


def flip_labels(y: Tensor, num_classes: int) -> Tensor:
    """Label flipping: every label l becomes L − l − 1."""
    return (num_classes - 1) - y
