"""Auror (Shen, Tople, Saxena, "Auror: Defending Against Poisoning Attacks in Collaborative Deep Learning Systems",
ACSAC 2016; docs/defenses.md, Auror).

1. For every feature (coordinate) of the updates, cluster the n clients' values with 2-means. If the distance
   between the two centres exceeds α the feature is *indicative* (α = 0.02 for MNIST, 0.0045 for GTSRB in the
   paper: it depends on the scale of the updates, i.e. on the model, learning rate and local epochs).
2. For each indicative feature, a cluster with fewer than n/2 members is *suspicious*.
3. A client that is in a suspicious cluster for more than τ = 50 % of the indicative features is malicious and
   removed; the others are aggregated by FedAvg. If no feature is indicative every client is accepted.

2-means is computed exactly and for all coordinates at once: in 1-D the optimal 2-means partition is a split of the
sorted values, so per coordinate we sort the n values and pick the split s (s smallest values on the left) that
minimises the within-cluster SSE, i.e. maximises S_s²/s + (T − S_s)²/(n − s) with S_s the prefix sum and T the
total (ties → the smallest s). Coordinates are processed in column chunks to bound memory.

Choices [U]: the paper computes the indicative features over its first training epochs and then keeps them; here
everything is recomputed every round from that round's updates. Features are the trainable coordinates (or those
of the layers named in ``layer``); ``max_features`` samples a subset of them uniformly without replacement with
``inp.generator`` each round (for large models). Batch-norm buffers never are features and are the plain mean of
the accepted clients (docs/defenses.md, Conventions.3).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..core.numeric import is_finite_number, is_int, is_number, two_means_1d, weighted_mean
from ..core.errors import ParameterError
from ..models import ParamLayout
from .base import Aggregate, Defense, DefenseContext, RoundInput, assemble, require
from .registry import register

__all__ = ["Auror", "auror_suspicion"]

_CHUNK_ELEMS = 1 << 22  # n × columns processed at once


def auror_suspicion(x: Tensor, alpha: float) -> tuple[Tensor, int]:
    """(per-client count of indicative features where it sits in a suspicious cluster (n,), number indicative)."""
    n, c_total = x.shape
    counts = torch.zeros(n, dtype=torch.float64, device=x.device)
    indicative_total = 0
    chunk = max(1, _CHUNK_ELEMS // n)
    ranks = torch.arange(n, device=x.device).unsqueeze(1)
    for start in range(0, c_total, chunk):
        order, split, gap = two_means_1d(x[:, start : start + chunk])
        indicative = gap > alpha
        indicative_total += int(indicative.sum())
        small_left = split.to(torch.float64) < n / 2
        small_right = (n - split).to(torch.float64) < n / 2
        in_left = ranks < split.unsqueeze(0)  # (n, c) in sorted order
        susp_sorted = ((in_left & small_left) | (~in_left & small_right)) & indicative
        per_client = torch.zeros(order.shape, dtype=torch.float64, device=x.device)
        per_client.scatter_(0, order, susp_sorted.to(torch.float64))
        counts += per_client.sum(dim=1)
    return counts, indicative_total


@register
class Auror(Defense):
    """Auror: per-coordinate 2-means; clients in minority clusters of most indicative features are removed.

    Parameters
    ----------
    alpha:
        centre-distance threshold for an indicative feature (default 0.02, the paper's MNIST value; scale-dependent).
    tau:
        a client is malicious if suspicious in more than ``tau`` of the indicative features (default 0.5).
    layer:
        ``None`` (default: all trainable coordinates), or the name (or list of names) of layout tensors to use.
    max_features:
        ``None`` (default: all), or the number of features sampled uniformly per round with ``inp.generator``.
    weighting:
        FedAvg weights of the accepted updates: ``"samples"`` (default) or ``"uniform"``.

    ``accepted``: the clients not flagged. ``info``: features examined, indicative features, flagged clients.
    """

    name = "auror"
    summary = "Per-coordinate 2-means; clients in minority clusters on most indicative coordinates are removed"
    paper = "Shen, Tople, Saxena, Auror: Defending Against Poisoning Attacks in Collaborative Deep Learning Systems, ACSAC 2016"

    context_args = ("layout",)

    def __init__(self, alpha: float = 0.02, tau: float = 0.5, layer: str | Sequence[str] | None = None,
                 max_features: int | None = None, weighting: str = "samples", layout: ParamLayout | None = None):
        require(is_finite_number(alpha) and alpha >= 0,
                "alpha", alpha, "allowed: a finite number >= 0")
        require(is_number(tau) and 0 <= tau < 1, "tau", tau,
                "allowed: 0 <= tau < 1")
        if isinstance(layer, str):
            layer = [layer]
        require(layer is None or (isinstance(layer, (list, tuple)) and len(layer) > 0
                                  and all(isinstance(s, str) for s in layer)), "layer", layer,
                "allowed: None, a tensor name, or a non-empty list of tensor names")
        require(max_features is None or (is_int(max_features) and max_features >= 1), "max_features", max_features,
                "allowed: None or an integer >= 1")
        require(weighting in ("samples", "uniform"), "weighting", weighting, "allowed: 'samples', 'uniform'")
        self.alpha = float(alpha)
        self.tau = float(tau)
        self.layer = None if layer is None else list(layer)
        self.max_features = max_features
        self.weighting = weighting
        if layout is not None:  # validate the layer names against the experiment's model at construction
            self._layer_mask(layout, torch.ones(layout.dim, dtype=torch.bool))

    @classmethod
    def context_values(cls, context: DefenseContext) -> dict[str, Any]:
        return {"layout": context.layout}

    def _layer_mask(self, layout: ParamLayout, train: Tensor) -> Tensor:
        """True on the coordinates of the ``layer`` tensors; :class:`ParameterError` naming an unknown or buffer one."""
        mask = torch.zeros_like(train)
        trainable = [e.name for e in layout.entries if e.kind != "buffer"]
        for name in self.layer or ():
            if name not in layout.names:
                raise ParameterError(f"layer={name!r} is invalid; allowed: a trainable tensor of the model, one of "
                                     f"{trainable[:20]}")
            entry = layout[name]
            if entry.kind == "buffer":
                raise ParameterError(f"layer={name!r} is a buffer (batch-norm statistics), not a trainable tensor")
            mask[entry.slice] = True
        return mask

    def _feature_mask(self, inp: RoundInput) -> Tensor:
        train = inp.layout.trainable_mask(device=inp.updates.device)
        if self.layer is None:
            return train
        return self._layer_mask(inp.layout, train)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        n = inp.n
        feats = torch.nonzero(self._feature_mask(inp)).flatten()
        if self.max_features is not None and feats.numel() > self.max_features:
            gen = inp.generator
            pick = torch.randperm(feats.numel(), generator=gen, device=gen.device)[: self.max_features]
            feats = feats[torch.sort(pick.to(feats.device)).values]
        if n >= 2 and feats.numel() > 0:
            counts, indicative = auror_suspicion(inp.updates[:, feats], self.alpha)
        else:
            counts, indicative = torch.zeros(n, dtype=torch.float64), 0
        if indicative > 0:
            flagged = counts.cpu() > self.tau * indicative
        else:
            flagged = torch.zeros(n, dtype=torch.bool)
        accepted = ~flagged
        train = inp.layout.trainable_mask(device=inp.updates.device)
        delta = None
        if bool(accepted.any()):
            adm = inp.updates[accepted.to(inp.updates.device)][:, train]
            weights = inp.num_samples[accepted] if self.weighting == "samples" else None
            delta = weighted_mean(adm, weights)
        new = assemble(inp, delta, accepted)
        info = {
            "accepted": float(accepted.sum()),
            "flagged": float(flagged.sum()),
            "features": float(feats.numel()),
            "indicative": float(indicative),
        }
        return Aggregate(new, accepted, info)
