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

from ..kernels import fast_path_available
from ..metrics import intrusion_detection_rates
from ..models import ParamLayout, load_flat_params

__all__ = ["Evaluator", "accuracy", "predict"]


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """(N,) predicted labels (argmax of the logits), eval mode, large batches."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[s : s + batch_size].to(device)).argmax(dim=1).cpu() for s in range(0, len(x), batch_size)])


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 256, channels_last: bool = True) -> float:
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
        batch_size: int = 256,
        device: str | torch.device = "cpu",
        backdoor_set: Optional[tuple[Tensor, Tensor]] = None,
        traffic: bool = False,
        calibration_x: Optional[Tensor] = None,
    ):
        """``traffic``: also report the intrusion-detection rates (:func:`~fedshield.metrics.intrusion_detection_rates`,
        benign = label 0). ``calibration_x``: held-out benign flows a model with a ``calibrate`` method (the
        autoencoder detector) sets its threshold on before every evaluation."""
        self.traffic = traffic
        self.calibration_x = calibration_x
        self.model = model_fn().to(device).to(memory_format=torch.channels_last)
        if hasattr(self.model, "fast_kernels"):  # the pool kernel: the same predictions bit for bit, faster
            self.model.fast_kernels = torch.device(device).type == "cpu" and fast_path_available()
        if hasattr(self.model, "calibrate") and calibration_x is None:
            raise ValueError("this model sets its threshold on held-out benign data: give calibration_x")
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

    def evaluate(self, params: Tensor) -> dict[str, float]:
        """``{"ma": ..., "ba": ...}`` (``ba`` is NaN when there is no backdoor); traffic adds
        ``detection_rate``, ``fpr``, ``f1`` (and ``threshold`` for a calibrated detector)."""
        load_flat_params(self.model, params.to(next(self.model.parameters()).device), self.layout)
        out: dict[str, float] = {}
        if self.calibration_x is not None and hasattr(self.model, "calibrate"):
            out["threshold"] = self.model.calibrate(self.calibration_x)
        if self.traffic:
            pred = predict(self.model, self.test_x, self.batch_size)
            out["ma"] = float((pred == self.test_y).double().mean())
            out.update(intrusion_detection_rates(pred, self.test_y))
        else:
            out["ma"] = accuracy(self.model, self.test_x, self.test_y, self.batch_size)
        out["ba"] = (
            accuracy(self.model, self.bd_x, self.bd_y, self.batch_size) if self.bd_x is not None else float("nan")
        )
        return out
