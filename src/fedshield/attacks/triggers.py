"""Pixel triggers: a set of (row, col) positions set to a value on every channel.

Named patterns (docs/attacks.md, Sources.1; docs/defenses.md, Fedward.5; docs/defenses.md, FLAIN.5):

* ``dba``: the DBA MNIST global trigger, four 1×4 bars at rows 0 and 3, columns 0–3 and 6–9 (Xie et al.,
  ICLR 2020, authors' config; reused by Fedward). Its four local parts are the four bars, in the order
  (0, 0–3), (0, 6–9), (3, 0–3), (3, 6–9).
* ``dba_cifar``: rows 0 and 4, columns 0–5 and 9–14 (four 1×6 bars).
* ``square``: a BadNets-style 5×5 white square at rows/columns 23–27 (FLAIN's MNIST-like trigger), one part.
* ``plus``: FLAIN's DBA plus sign (column 25, rows 23–27 and row 25, columns 23–27), two parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["Trigger", "named_trigger", "TRIGGER_NAMES", "BlendTrigger", "blend_pattern", "BLEND_PATTERNS"]


@dataclass(frozen=True)
class Trigger:
    """Pixels set to ``value`` on all channels. ``parts`` splits the pixels for distributed attacks."""

    pixels: tuple[tuple[int, int], ...]
    value: float = 1.0
    parts: tuple[tuple[tuple[int, int], ...], ...] = ()

    def __post_init__(self) -> None:
        if not self.pixels:
            raise ValueError("a trigger needs at least one pixel")
        if not self.parts:
            object.__setattr__(self, "parts", (self.pixels,))

    @property
    def num_parts(self) -> int:
        return len(self.parts)

    def part(self, index: int) -> "Trigger":
        """Local trigger ``index`` (modulo the number of parts) as a trigger of its own."""
        p = self.parts[index % self.num_parts]
        return Trigger(p, self.value)

    def mask(self, height: int, width: int) -> Tensor:
        """(H, W) bool mask of the trigger pixels; raises if a pixel lies outside the image."""
        return _mask(self.pixels, height, width)

    def apply(self, images: Tensor) -> Tensor:
        """A copy of ``images`` (N, C, H, W) with the trigger stamped on every channel."""
        out = images.clone()
        out[..., self.mask(images.shape[-2], images.shape[-1])] = self.value
        return out

    def apply_(self, images: Tensor) -> Tensor:
        """Stamp the trigger in place and return ``images``."""
        images[..., self.mask(images.shape[-2], images.shape[-1])] = self.value
        return images


@lru_cache(maxsize=256)
def _mask(pixels: tuple[tuple[int, int], ...], height: int, width: int) -> Tensor:
    m = torch.zeros(height, width, dtype=torch.bool)
    for r, c in pixels:
        if not (0 <= r < height and 0 <= c < width):
            raise ValueError(f"trigger pixel ({r}, {c}) lies outside a {height}×{width} image")
        m[r, c] = True
    return m


def _bar(row: int, cols: range) -> tuple[tuple[int, int], ...]:
    return tuple((row, c) for c in cols)


def _block(rows: range, cols: range) -> tuple[tuple[int, int], ...]:
    return tuple((r, c) for r in rows for c in cols)


def _from_parts(parts: Sequence[tuple[tuple[int, int], ...]], value: float) -> Trigger:
    pixels = tuple(dict.fromkeys(p for part in parts for p in part))
    return Trigger(pixels, value, tuple(parts))


_NAMED = {
    "dba": lambda v: _from_parts([_bar(0, range(0, 4)), _bar(0, range(6, 10)), _bar(3, range(0, 4)), _bar(3, range(6, 10))], v),
    "dba_cifar": lambda v: _from_parts(
        [_bar(0, range(0, 6)), _bar(0, range(9, 15)), _bar(4, range(0, 6)), _bar(4, range(9, 15))], v
    ),
    "square": lambda v: _from_parts([_block(range(23, 28), range(23, 28))], v),
    "plus": lambda v: _from_parts(
        [tuple((r, 25) for r in range(23, 28)), tuple((25, c) for c in range(23, 28))], v
    ),
}
TRIGGER_NAMES = tuple(sorted(_NAMED))


def named_trigger(name: str, value: float = 1.0) -> Trigger:
    """A trigger by name (see the module docstring)."""
    if name not in _NAMED:
        raise ValueError(f"unknown trigger pattern {name!r}; available: {list(TRIGGER_NAMES)}")
    return _NAMED[name](value)


# ----------------------------------------------------------------------------------------- blended triggers

BLEND_PATTERNS = ("noise", "checkerboard")


def blend_pattern(name: str, channels: int, height: int, width: int, seed: int = 0) -> Tensor:
    """A full-image (C, H, W) pattern in [0, 1] for a blended trigger.

    * ``noise``: i.i.d. uniform [0, 1] pixels drawn from ``torch.Generator().manual_seed(seed)`` (the
      random-noise key pattern of Chen et al., 2017, "Targeted backdoor attacks ... using data poisoning");
    * ``checkerboard``: alternating 0/1 pixels, (r + c) even → 1 (no randomness).
    """
    if name == "noise":
        g = torch.Generator().manual_seed(int(seed))
        return torch.rand(channels, height, width, generator=g)
    if name == "checkerboard":
        r = torch.arange(height).view(-1, 1)
        c = torch.arange(width).view(1, -1)
        return ((r + c) % 2 == 0).float().expand(channels, height, width).clone()
    raise ValueError(f"unknown blend pattern {name!r}; available: {list(BLEND_PATTERNS)}")


@dataclass(frozen=True, eq=False)
class BlendTrigger:
    """Blended trigger: x' = (1 − α)·x + α·pattern on the whole image (pattern (C, H, W) in [0, 1])."""

    pattern: Tensor
    alpha: float

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha={self.alpha!r} is invalid; must be in (0, 1]")

    @property
    def num_parts(self) -> int:
        return 1

    def part(self, index: int) -> "BlendTrigger":
        return self

    def apply(self, images: Tensor) -> Tensor:
        return self.apply_(images.clone())

    def apply_(self, images: Tensor) -> Tensor:
        p = self.pattern.to(images.device, images.dtype)
        return images.mul_(1.0 - self.alpha).add_(p, alpha=self.alpha)
