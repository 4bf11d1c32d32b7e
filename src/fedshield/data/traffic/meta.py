"""What a traffic dataset carries beside its feature matrix: families, devices, feature names, preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["TrafficMeta", "BENIGN_LABEL"]

BENIGN_LABEL = 0  # benign is label 0 in both label modes


@dataclass(frozen=True, eq=False)
class TrafficMeta:
    """Per-row attack family (0 = benign) and device of both splits, and how the rows were made.

    ``label_mode`` ``binary``: labels are 0 benign / 1 attack; ``multiclass``: the label is the family index.
    """

    feature_names: tuple[str, ...]
    family_names: tuple[str, ...]  # index 0 is "benign"
    train_family: Tensor = field(repr=False)  # (N_train,) int64
    test_family: Tensor = field(repr=False)
    label_mode: str = "binary"
    train_device: Optional[Tensor] = field(default=None, repr=False)  # (N_train,) int64 or None
    test_device: Optional[Tensor] = field(default=None, repr=False)
    device_names: tuple[str, ...] = ()
    report: dict[str, Any] = field(default_factory=dict, repr=False)

    def family_index(self, name: str) -> int:
        """Index of family ``name`` (``ValueError`` listing the families otherwise)."""
        if name not in self.family_names:
            raise ValueError(f"unknown attack family {name!r}; this dataset has {list(self.family_names[1:])}")
        return self.family_names.index(name)

    def feature_index(self, feature: str | int) -> int:
        """Column of ``feature`` (a name or an index)."""
        if isinstance(feature, int) and not isinstance(feature, bool):
            if not 0 <= feature < len(self.feature_names):
                raise ValueError(f"feature index {feature} is outside 0..{len(self.feature_names) - 1}")
            return feature
        if feature not in self.feature_names:
            raise ValueError(f"unknown feature {feature!r}; features: {list(self.feature_names)}")
        return self.feature_names.index(feature)

    @property
    def num_devices(self) -> int:
        return len(self.device_names) if self.device_names else (
            int(self.train_device.max()) + 1 if self.train_device is not None and len(self.train_device) else 0
        )

    def subset_train(self, n: int) -> "TrafficMeta":
        """The same with only the first ``n`` training rows (``data.train_subset``)."""
        dev = None if self.train_device is None else self.train_device[:n]
        return TrafficMeta(self.feature_names, self.family_names, self.train_family[:n], self.test_family,
                           self.label_mode, dev, self.test_device, self.device_names, self.report)


def as_tensor(a) -> Optional[Tensor]:
    return None if a is None else torch.from_numpy(a.copy())
