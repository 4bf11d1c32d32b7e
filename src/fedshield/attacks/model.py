"""Model poisoning: training-time hooks and update-level transformations.

Training-time (:class:`~fedshield.attacks.base.TrainHooks`, run inside local training on the trainable
tensors; BatchNorm statistics and other buffers are never touched):

* :class:`ConstrainHook` — constrain-and-scale loss α·L_class + (1 − α)·L_ano (Bagdasaryan et al.), with
  L_ano = ‖W − G‖₂ (``l2``) or 1 − cos(W, G) (``cosine``, on the flat parameter vectors), computed in torch
  on the flattened trainable parameters so its gradient flows into the weights.
* :class:`PGDHook` — projection onto the L2 ball of radius ε around G every ``project_every`` optimiser
  steps and after the last one (Wang et al.); computed without Python synchronisation
  (W ← G + (W − G)·min(1, ε/‖W − G‖)).
* :class:`NeurotoxinHook` — Neurotoxin (Zhang et al., ICML 2022): the coordinates in ``mask`` (the top-k %
  by magnitude of the estimated benign update) are frozen: their gradients are zeroed after backward and
  their values reset to G after every step (momentum and weight decay would otherwise move them).

Update-level (after training, on the trainable coordinates of Δ = W − G): :func:`scale_update`,
:func:`scale_to_norm`, :func:`add_noise`, :func:`topk_mask`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..models import ParamLayout
from .base import TrainHooks

__all__ = [
    "ConstrainHook",
    "PGDHook",
    "NeurotoxinHook",
    "HookChain",
    "flat",
    "l2_distance",
    "cosine_distance",
    "project_l2",
    "scale_update",
    "scale_to_norm",
    "add_noise",
    "topk_mask",
]


def flat(tensors: list[Tensor]) -> Tensor:
    """Concatenate tensors (any memory format) in logical order; differentiable."""
    return torch.cat([t.reshape(-1) for t in tensors])


def l2_distance(w: Tensor, g: Tensor) -> Tensor:
    """‖w − g‖₂, with a tiny epsilon inside the root so the gradient is finite at w = g."""
    return torch.sqrt(((w - g) ** 2).sum() + 1e-12)


def cosine_distance(w: Tensor, g: Tensor) -> Tensor:
    return 1.0 - torch.nn.functional.cosine_similarity(w, g, dim=0, eps=1e-12)


class ConstrainHook(TrainHooks):
    def __init__(self, alpha: float, distance: str = "l2"):
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha={alpha!r} is invalid; must be in [0, 1]")
        if distance not in ("l2", "cosine"):
            raise ValueError(f"distance={distance!r} is invalid; one of ['l2', 'cosine']")
        self.alpha = alpha
        self.distance = l2_distance if distance == "l2" else cosine_distance

    def begin(self, params, global_params):
        self.global_flat = flat([g.detach() for g in global_params])

    def anomaly_loss(self, params: list[Tensor]) -> Tensor:
        return self.distance(flat(params), self.global_flat)

    def loss(self, class_loss, params):
        return self.alpha * class_loss + (1 - self.alpha) * self.anomaly_loss(params)


@torch.no_grad()
def project_l2(params: list[Tensor], global_params: list[Tensor], eps: float) -> None:
    """In place: W ← G + (W − G)·min(1, ε/‖W − G‖₂) over all ``params`` together."""
    sq = torch.zeros((), dtype=torch.float64, device=params[0].device)
    for p, g in zip(params, global_params):
        sq += ((p - g).double() ** 2).sum()
    factor = torch.clamp(eps / (sq.sqrt() + 1e-12), max=1.0).to(params[0].dtype)
    for p, g in zip(params, global_params):
        p.copy_(g + (p - g) * factor)


class PGDHook(TrainHooks):
    def __init__(self, eps: float, project_every: int = 10):
        if eps <= 0:
            raise ValueError(f"eps={eps!r} is invalid; must be > 0")
        if project_every < 1:
            raise ValueError(f"project_every={project_every!r} is invalid; must be >= 1")
        self.eps = eps
        self.every = project_every

    def after_step(self, params, step):
        if step % self.every == 0:
            project_l2(params, self.global_params, self.eps)

    def end(self, params):
        project_l2(params, self.global_params, self.eps)


class NeurotoxinHook(TrainHooks):
    """``frozen``: (d,) bool over the full flat layout; True = keep at the global value."""

    def __init__(self, frozen: Tensor, layout: ParamLayout):
        self.frozen_flat = frozen
        self.layout = layout

    def begin(self, params, global_params):
        self.global_params = global_params
        entries = self.layout.trainable_entries()
        self.frozen = [self.frozen_flat[e.slice].view(e.shape).to(p.device) for e, p in zip(entries, params)]
        self.keep = [(~m).to(p.dtype) for m, p in zip(self.frozen, params)]

    @torch.no_grad()
    def after_backward(self, params):
        for p, k in zip(params, self.keep):
            if p.grad is not None:
                p.grad.mul_(k)

    @torch.no_grad()
    def after_step(self, params, step):
        for p, g, m in zip(params, self.global_params, self.frozen):
            p.copy_(torch.where(m, g, p))

    def end(self, params):
        self.after_step(params, -1)


class HookChain(TrainHooks):
    """Several hooks in order (loss terms compose by function application)."""

    def __init__(self, hooks: list[TrainHooks]):
        self.hooks = hooks

    def begin(self, params, global_params):
        for h in self.hooks:
            h.begin(params, global_params)

    def loss(self, class_loss, params):
        for h in self.hooks:
            class_loss = h.loss(class_loss, params)
        return class_loss

    def after_backward(self, params):
        for h in self.hooks:
            h.after_backward(params)

    def after_step(self, params, step):
        for h in self.hooks:
            h.after_step(params, step)

    def end(self, params):
        for h in self.hooks:
            h.end(params)


# ------------------------------------------------------------------------------------- update level


def scale_update(update: Tensor, gamma: float, layout: Optional[ParamLayout] = None) -> Tensor:
    """γ·Δ on the trainable coordinates (buffers such as BN statistics are left as trained)."""
    if layout is None or not layout.has_buffers:
        return update * gamma
    m = layout.trainable_mask(update.device)
    return torch.where(m, update * gamma, update)


def scale_to_norm(update: Tensor, norm_bound: float, layout: Optional[ParamLayout] = None) -> tuple[Tensor, float]:
    """Train-and-scale: γ = S/‖Δ‖₂ (norm over the trainable coordinates); returns (γ·Δ, γ)."""
    m = layout.trainable_mask(update.device) if layout is not None else torch.ones_like(update, dtype=torch.bool)
    norm = float(update[m].double().norm())
    gamma = norm_bound / norm if norm > 0 else 1.0
    return scale_update(update, gamma, layout), gamma


def add_noise(update: Tensor, sigma: float, generator: torch.Generator, layout: Optional[ParamLayout] = None) -> Tensor:
    """Δ + N(0, σ²) on the trainable coordinates, drawn from ``generator``."""
    noise = torch.randn(update.shape, generator=generator, dtype=update.dtype) * sigma
    if layout is not None and layout.has_buffers:
        noise = noise * layout.trainable_mask().to(noise.dtype)
    return update + noise.to(update.device)


def topk_mask(change: Tensor, percent: float, layout: Optional[ParamLayout] = None) -> Tensor:
    """(d,) bool: True on the ``percent`` % trainable coordinates of largest |change| (ties: lower index)."""
    d = change.numel()
    trainable = layout.trainable_mask(change.device) if layout is not None else torch.ones(d, dtype=torch.bool)
    mag = torch.where(trainable, change.abs(), torch.full_like(change, -1.0))
    k = int(round(percent / 100.0 * int(trainable.sum())))
    out = torch.zeros(d, dtype=torch.bool, device=change.device)
    if k > 0:
        out[torch.topk(mag, k, sorted=False).indices] = True
    return out
