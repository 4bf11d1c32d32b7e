"""The in-memory dataset type every loader returns (IDX, CIFAR batches, synthetic images, network traffic)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from ..core.errors import DataError
from .traffic.meta import TrafficMeta

__all__ = ["Dataset"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A whole dataset in memory: images ``(N, C, H, W)`` float32 in [0, 1], labels ``(N,)`` int64.

    Network traffic (``traffic`` set): flow features ``(N, F)`` float32, preprocessed (scaled), or windows of
    consecutive flows ``(N, T, F)``, with the family and device of every row in ``traffic``.
    """

    name: str
    train_x: Tensor = field(repr=False)
    train_y: Tensor = field(repr=False)
    test_x: Tensor = field(repr=False)
    test_y: Tensor = field(repr=False)
    num_classes: int
    traffic: Optional[TrafficMeta] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        dims, shape = (4, "(N, C, H, W)") if self.traffic is None else (2, "(N, F)")
        if self.traffic is not None and self.train_x.dim() == 3:
            dims, shape = 3, "(N, T, F) windows"
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.float32 or x.dim() != dims:
                raise DataError(f"{self.name}: {split}_x must be {shape} float32, got {tuple(x.shape)} {x.dtype}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DataError(
                    f"{self.name}: {split}_y must be ({x.shape[0]},) int64, got {tuple(y.shape)} {y.dtype}"
                )
        if self.traffic is None and self.train_x.shape[-1] != self.train_x.shape[-2]:
            raise DataError(f"{self.name}: images must be square, got {tuple(self.train_x.shape[2:])}")
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise DataError(
                f"{self.name}: train {tuple(self.train_x.shape[1:])} and test {tuple(self.test_x.shape[1:])} "
                "samples differ in shape"
            )
        if self.num_classes < 2:
            raise DataError(f"{self.name}: num_classes={self.num_classes} is invalid; must be >= 2")

    @property
    def kind(self) -> str:
        """``"traffic"`` (flow features) or ``"image"``: the domain, which picks defaults (FLAME's λ, the model)."""
        return "traffic" if self.traffic is not None else "image"

    @property
    def num_features(self) -> int:
        """Number of feature columns of a traffic dataset (the last dimension, also for windows)."""
        return int(self.train_x.shape[-1])

    @property
    def in_channels(self) -> int:
        """Number of image channels C."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Side length of the (square) images."""
        return int(self.train_x.shape[-1])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.train_x.shape)}, test={tuple(self.test_x.shape)}, "
            f"num_classes={self.num_classes})"
        )
