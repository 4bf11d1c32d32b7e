"""A deterministic synthetic image-classification dataset for fast tests (docs/architecture.md, ``data/``).

Each class has a fixed random prototype image: smooth blobs made by upsampling a random 7×7 grid. A sample
is its class prototype with a random contrast in [0.6, 1.0] plus Gaussian pixel noise (std 0.25), clipped to
[0, 1]. Classes are balanced. A small CNN learns it to high accuracy within a few epochs, yet the noise keeps
single pixels uninformative, so a pixel-pattern trigger still has to be learned like on real data.

Prototypes, the training set and the test set come from independent streams of one ``SeedSequence(seed)``,
so changing ``num_test`` never changes the training samples.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.numeric import is_int
from .dataset import Dataset

__all__ = ["make_synthetic"]

_GRID = 7  # resolution of the random grid a prototype is upsampled from
_NOISE_STD = 0.25
_CONTRAST = (0.6, 1.0)


def _samples(rng: np.random.Generator, prototypes: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``n`` balanced, shuffled samples drawn around ``prototypes`` (L, C, H, W)."""
    num_classes = prototypes.shape[0]
    labels = rng.permutation(np.arange(n) % num_classes)
    contrast = rng.uniform(*_CONTRAST, size=(n, 1, 1, 1)).astype(np.float32)
    noise = rng.normal(0.0, _NOISE_STD, size=(n, *prototypes.shape[1:])).astype(np.float32)
    y = torch.from_numpy(labels.astype(np.int64))
    x = (torch.from_numpy(contrast) * (prototypes[y] - 0.5) + 0.5 + torch.from_numpy(noise)).clamp_(0.0, 1.0)
    return x.contiguous(), y


def make_synthetic(
    num_train: int = 2000,
    num_test: int = 500,
    num_classes: int = 10,
    image_size: int = 28,
    channels: int = 1,
    seed: int = 0,
) -> Dataset:
    """Build the synthetic dataset: images ``(N, channels, image_size, image_size)`` float32 in [0, 1]."""
    for name, value, low in (
        ("num_train", num_train, 1),
        ("num_test", num_test, 1),
        ("num_classes", num_classes, 2),
        ("image_size", image_size, 4),
        ("channels", channels, 1),
    ):
        if not is_int(value) or value < low:
            raise ValueError(f"{name}={value!r} is invalid; must be an integer >= {low}")
    proto_ss, train_ss, test_ss = np.random.SeedSequence(seed).spawn(3)
    grid = np.random.default_rng(proto_ss).uniform(0.0, 1.0, size=(num_classes, channels, _GRID, _GRID))
    prototypes = F.interpolate(
        torch.from_numpy(grid.astype(np.float32)), size=(image_size, image_size), mode="bilinear", align_corners=False
    )
    train_x, train_y = _samples(np.random.default_rng(train_ss), prototypes, num_train)
    test_x, test_y = _samples(np.random.default_rng(test_ss), prototypes, num_test)
    return Dataset("synthetic", train_x, train_y, test_x, test_y, num_classes)
