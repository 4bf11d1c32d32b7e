"""The in-memory dataset type every loader returns (IDX, CIFAR batches, synthetic)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Dataset"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A whole dataset in memory: images ``(N, C, H, W)`` float32 in [0, 1], labels ``(N,)`` int64."""

    name: str
    train_x: Tensor = field(repr=False)
    train_y: Tensor = field(repr=False)
    test_x: Tensor = field(repr=False)
    test_y: Tensor = field(repr=False)
    num_classes: int

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.float32 or x.dim() != 4:
                raise ValueError(f"{self.name}: {split}_x must be (N, C, H, W) float32, got {tuple(x.shape)} {x.dtype}")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(
                    f"{self.name}: {split}_y must be ({x.shape[0]},) int64, got {tuple(y.shape)} {y.dtype}"
                )
        if self.train_x.shape[1:] != self.test_x.shape[1:]:
            raise ValueError(
                f"{self.name}: train images {tuple(self.train_x.shape[1:])} and test images "
                f"{tuple(self.test_x.shape[1:])} differ in shape"
            )
        if self.num_classes < 2:
            raise ValueError(f"{self.name}: num_classes={self.num_classes} is invalid; must be >= 2")

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
