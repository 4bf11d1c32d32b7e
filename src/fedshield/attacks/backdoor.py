"""Per-batch data poisoning.

* :class:`BatchPoisoner`: stamp a trigger on the first ``poison_per_batch`` samples of every batch and relabel
  them to the target (DBA authors' code, docs/attacks.md, Sources.1;
  Fedward's code, docs/defenses.md, Fedward.5). In a distributed attack (DBA)
  attacker ``i`` (0-based among the attackers) uses local part ``i`` of the global trigger; the backdoor
  accuracy is always measured with the global trigger. ``fraction`` (model alignment, FLAME §7) replaces the
  fixed count by ``round(fraction · batch length)``. A batch shorter than the batch size (the last of an epoch)
  gets ``min(poison_per_batch, length)`` (the DBA authors' code), or with ``full_batch``
  (``attack.poison_count: proportional``, the Fedward authors' code) the same share, ⌊k · length / batch size⌋.
* :class:`SourceClassPoisoner`: a source-specific backdoor (FLAIN's setting; docs/defenses.md, FLAIN.5): only
  samples of the source class s are stamped and relabelled, ``round(fraction · #s in the batch)`` of them per
  batch.
* :class:`SubstitutePoisoner`: swap the first k samples of every batch for samples drawn from a pool of real
  backdoor images (semantic and edge-case backdoors; Bagdasaryan et al. swap c backdoor images into each batch).
* :func:`flip_labels`: l → L − l − 1 (label flipping, Fang et al. / FLTrust).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["BatchPoisoner", "SourceClassPoisoner", "SubstitutePoisoner", "flip_labels"]


def _count(per_batch: int, fraction: Optional[float], n: int, full_batch: Optional[int] = None) -> int:
    """How many of a batch of ``n`` samples to poison: ``round(fraction · n)`` when ``fraction`` is given;
    else ``per_batch``, or with ``full_batch`` (``attack.poison_count: proportional``) the same share of a
    shorter batch, ⌊per_batch · n / full_batch⌋ (the Fedward authors' ``int(poison_rate · len(batch))``,
    trainer/client.py 42-50); never more than ``n``."""
    if fraction is not None:
        k = int(round(fraction * n))
    elif full_batch is not None:
        k = per_batch * n // full_batch
    else:
        k = per_batch
    return max(0, min(k, n))


def _check_full_batch(per_batch: int, full_batch: Optional[int]) -> None:
    if full_batch is not None and not 0 <= per_batch <= full_batch:
        raise ValueError(f"poison_per_batch={per_batch} is invalid with poison_count proportional; it must be at most "
                         f"the attackers' batch size {full_batch}")


@dataclass(frozen=True)
class BatchPoisoner:
    """Poison a batch in place of a copy: the first ``per_batch`` samples get ``trigger`` and ``target``."""

    trigger: Any  # Trigger or BlendTrigger: anything with apply_(images)
    target: int
    per_batch: int
    fraction: Optional[float] = None
    full_batch: Optional[int] = None  # attack.poison_count proportional: the batch length per_batch refers to

    def __post_init__(self) -> None:
        if self.per_batch < 0:
            raise ValueError(f"poison_per_batch={self.per_batch} is invalid; must be >= 0")
        if self.fraction is not None and not 0 <= self.fraction <= 1:
            raise ValueError(f"fraction={self.fraction} is invalid; must be in [0, 1]")
        _check_full_batch(self.per_batch, self.full_batch)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        k = _count(self.per_batch, self.fraction, x.shape[0], self.full_batch)
        if k == 0:
            return x, y
        x = x.clone()
        y = y.clone()
        self.trigger.apply_(x[:k])
        y[:k] = self.target
        return x, y


@dataclass(frozen=True)
class SourceClassPoisoner:
    """Poison only images of class ``source``: the first ``round(fraction · m)`` of the m source-class samples of
    each batch get ``trigger`` and ``target`` (half to even, as Python's ``round``).

    FLAIN's code (``utils.py``) poisons ``poison_frac`` of each malicious client's base-class samples once, before
    training; stamping a share of the base-class samples of every (shuffled) batch poisons the same share in
    expectation.
    """

    trigger: Any
    target: int
    source: int
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"source_fraction={self.fraction} is invalid; must be in (0, 1]")
        if self.source == self.target:
            raise ValueError(f"source_class={self.source} equals the target label; choose another class")

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        idx = torch.nonzero(y == self.source).flatten()
        k = int(round(self.fraction * idx.numel()))
        if k == 0:
            return x, y
        pick = idx[:k]
        x = x.clone()
        y = y.clone()
        x[pick] = self.trigger.apply(x[pick])
        y[pick] = self.target
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
    full_batch: Optional[int] = None  # as in BatchPoisoner

    def __post_init__(self) -> None:
        if len(self.pool) == 0:
            raise ValueError("a substitution poisoner needs a non-empty pool of backdoor images")
        _check_full_batch(self.per_batch, self.full_batch)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        k = _count(self.per_batch, self.fraction, x.shape[0], self.full_batch)
        if k == 0:
            return x, y
        pick = torch.randint(len(self.pool), (k,), generator=self.generator)
        x = x.clone()
        y = y.clone()
        x[:k] = self.pool[pick].to(x.device)
        y[:k] = self.target
        return x, y


def flip_labels(y: Tensor, num_classes: int) -> Tensor:
    """Label flipping: every label l becomes L − l − 1."""
    return (num_classes - 1) - y
