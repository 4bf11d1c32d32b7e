"""Main-task accuracy (MA) and backdoor accuracy (BA) of a flat global model.

The backdoor test set comes from the attack (``Attack.backdoor_test_set``: images and the labels the attacker
wants). For trigger attacks it is the test images whose true label is not the target, stamped with the global
trigger (the convention of the Fedward and FLTrust code,
docs/defenses.md, Conventions.5); for sub-population attacks the held-out images of the
sub-population. BA is the share classified as those labels.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..models import ParamLayout, load_flat_params

__all__ = ["Evaluator", "accuracy"]


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000, channels_last: bool = True) -> float:
    """Share of ``x`` that ``model`` classifies as ``y`` (eval mode, large batches)."""
    if len(x) == 0:
        raise ValueError("cannot compute accuracy on an empty set")
    model.eval()
    device = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        if channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        correct += (model(xb).argmax(dim=1) == y[start : start + batch_size].to(device)).sum()
    return int(correct) / len(x)


class Evaluator:
    """Evaluates flat parameter vectors on a fixed test set and its triggered copy."""

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        test_x: Tensor,
        test_y: Tensor,
        batch_size: int = 1000,
        device: str | torch.device = "cpu",
        backdoor_set: Optional[tuple[Tensor, Tensor]] = None,
    ):
        self.model = model_fn().to(device).to(memory_format=torch.channels_last)
        self.layout = ParamLayout.from_module(self.model)
        self.test_x, self.test_y = test_x, test_y
        self.batch_size = batch_size
        self.bd_x: Optional[Tensor] = None
        self.bd_y: Optional[Tensor] = None
        if backdoor_set is not None:
            self.bd_x, self.bd_y = backdoor_set
            if len(self.bd_x) != len(self.bd_y) or len(self.bd_x) == 0:
                raise ValueError("the backdoor test set must be non-empty with one label per image")

    def evaluate(self, params: Tensor) -> dict[str, float]:
        """``{"ma": ..., "ba": ...}`` (``ba`` is NaN when there is no backdoor)."""
        load_flat_params(self.model, params.to(next(self.model.parameters()).device), self.layout)
        out = {"ma": accuracy(self.model, self.test_x, self.test_y, self.batch_size)}
        out["ba"] = (
            accuracy(self.model, self.bd_x, self.bd_y, self.batch_size) if self.bd_x is not None else float("nan")
        )
        return out
