"""Main-task accuracy (MA) and backdoor accuracy (BA) of a flat global model.

BA follows the convention of the Fedward and FLTrust code (algorithms.md §0.3): the test images whose true
label is not the target, stamped with the global trigger; BA is the share classified as the target. An attack
may supply its own backdoor test set instead (``backdoor_set``: images and the labels the attacker wants,
e.g. the held-out images of an edge-case sub-population); BA is then the share classified as those labels.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..attacks.triggers import Trigger
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
        trigger: Optional[Trigger] = None,
        target: Optional[int] = None,
        batch_size: int = 1000,
        device: str | torch.device = "cpu",
        backdoor_set: Optional[tuple[Tensor, Tensor]] = None,
    ):
        self.model = model_fn().to(device).to(memory_format=torch.channels_last)
        self.layout = ParamLayout.from_module(self.model)
        # the test sets live on ``device`` (copied once, not once per evaluation)
        self.test_x, self.test_y = test_x.to(device), test_y.to(device)
        self.batch_size = batch_size
        self.bd_x: Optional[Tensor] = None
        self.bd_y: Optional[Tensor] = None
        if backdoor_set is not None:
            self.bd_x, self.bd_y = backdoor_set[0].to(device), backdoor_set[1].to(device)
            if len(self.bd_x) != len(self.bd_y) or len(self.bd_x) == 0:
                raise ValueError("the backdoor test set must be non-empty with one label per image")
        elif trigger is not None:
            if target is None:
                raise ValueError("a backdoor evaluation needs the target label")
            keep = test_y != target
            self.bd_x = trigger.apply(test_x[keep]).to(device)
            self.bd_y = torch.full((int(keep.sum()),), int(target), dtype=torch.int64, device=device)

    def evaluate(self, params: Tensor) -> dict[str, float]:
        """``{"ma": ..., "ba": ...}`` (``ba`` is NaN when there is no backdoor)."""
        load_flat_params(self.model, params.to(next(self.model.parameters()).device), self.layout)
        out = {"ma": accuracy(self.model, self.test_x, self.test_y, self.batch_size)}
        out["ba"] = (
            accuracy(self.model, self.bd_x, self.bd_y, self.batch_size) if self.bd_x is not None else float("nan")
        )
        return out
