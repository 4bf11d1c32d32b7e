"""Post-training defenses run once after the last round (FLAIN); reports MA/BA before and after."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..config import ConfigError
from ..defenses import build_post_training
from .setup import Setup

__all__ = ["auxiliary_set", "run_post_training"]


def auxiliary_set(setup: Setup, per_class: int) -> tuple[Tensor, Tensor]:
    """``per_class`` samples of each class from the server's held-out training slice (never the test set)."""
    x, y = setup.server_data()
    picks = []
    for c in range(setup.dataset.num_classes):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < per_class:
            raise ConfigError(
                f"post_training.aux_per_class={per_class} but the held-out slice has {len(idx)} samples of class {c}; "
                f"raise data.server_holdout to at least {per_class * setup.dataset.num_classes}"
            )
        picks.append(idx[:per_class])
    sel = torch.cat(picks)
    return x[sel], y[sel]


def run_post_training(setup: Setup, final_params: Tensor) -> dict[str, Any]:
    pt = setup.cfg.post_training
    assert pt is not None
    method = build_post_training(pt.name, pt.params)
    aux_x, aux_y = auxiliary_set(setup, pt.aux_per_class)
    before = setup.evaluator.evaluate(final_params)
    result = method.repair(setup.model_fn(), setup.start, final_params, aux_x, aux_y)
    after = setup.evaluator.evaluate(result.params)
    return {
        "name": pt.name,
        "ma_before": before["ma"],
        "ba_before": before["ba"],
        "ma_after": after["ma"],
        "ba_after": after["ba"],
        "k": result.k,
        "flipped": result.flipped,
        "aux_acc_before": result.aux_acc_before,
        "aux_acc_after": result.aux_acc_after,
        "stopped_reason": result.stopped_reason,
    }
