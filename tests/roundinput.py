"""Shared test helpers: a one-tensor layout and a RoundInput from a small update matrix."""

from __future__ import annotations

import torch

from fedshield.defenses import RoundInput
from fedshield.models import LayoutEntry, ParamLayout


def flat_layout(d: int) -> ParamLayout:
    """A layout of one trainable weight vector of length d."""
    return ParamLayout((LayoutEntry("w", (d,), 0, d, "weight"),))


def make_input(updates, g=None, layout=None, seed=0, num_samples=None, client_ids=None, rnd=1) -> RoundInput:
    """RoundInput with G = 0 (or ``g``), ids 0..n-1, equal sample counts unless given, a seeded generator."""
    updates = torch.as_tensor(updates, dtype=torch.float32)
    n, d = updates.shape
    return RoundInput(
        global_params=torch.zeros(d) if g is None else torch.as_tensor(g, dtype=torch.float32),
        updates=updates,
        layout=layout or flat_layout(d),
        round=rnd,
        client_ids=list(range(n)) if client_ids is None else client_ids,
        num_samples=torch.ones(n) if num_samples is None else torch.as_tensor(num_samples, dtype=torch.float32),
        generator=torch.Generator().manual_seed(seed),
    )
