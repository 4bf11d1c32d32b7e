"""FLTrust (Cao, Fang, Liu, Gong, "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping", NDSS 2021).

One round, as in the paper's Algorithm 1 / Eqs. (2)–(5) (docs/defenses.md, FLTrust.1) [P]:

* the server trains its own update g_0 on a small clean root set D_0 (default 100 samples), starting from the
  current global model, with the same kind of local procedure the clients run;
* trust score TS_i = ReLU(cos(g_i, g_0))                                    (Eq. 3);
* magnitude normalisation ḡ_i = (‖g_0‖ / ‖g_i‖) · g_i                       (Eq. 4);
* g = Σ_i TS_i ḡ_i / Σ_j TS_j                                               (Eq. 5);
* G ← G + η · g (η = ``server_lr``, the paper's global learning rate α).

Conventions (not fixed by the paper):

* Cosines and norms use the trainable coordinates only; batch-norm buffers (layout kind ``"buffer"``) are
  aggregated by the TS-weighted mean of the raw buffer updates, without rescaling [U, docs/defenses.md, Conventions.3].
* If every TS_i is 0 (or the server update is 0), the global model is kept and ``info["all_zero"] = 1``
  [U; SAFEFL and zhmzm do this, docs/defenses.md, FLTrust.2].
* Root set: the first ``root_size`` samples of ``context.server_data`` taken class-balanced where possible
  (round-robin over classes in order of the held-out slice; classes with too few samples are filled from the
  others) [U: the paper samples D_0 uniformly from the training data; the simulator's holdout is already
  stratified, so this only matters when ``root_size`` is smaller than the holdout].
* The server's training randomness (batch order) comes from a ``torch.Generator`` seeded with one 63-bit draw
  from ``inp.generator`` per round.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core.numeric import is_finite_number, is_int, is_number
from .base import Aggregate, Defense, DefenseContext, LocalTrain, ParameterError, RoundInput, require
from .registry import register

__all__ = ["FLTrust", "trust_scores", "select_root_set", "fltrust_combine"]


def select_root_set(y: Tensor, size: int) -> Tensor:
    """Indices (sorted) of ``size`` samples of ``y``, class-balanced where possible.

    Round-robin over the classes: every sample gets its rank within its class (0 for the first sample of the class
    in ``y``'s order, 1 for the second ...); samples are taken by increasing rank, ties by class order of first
    appearance. With ``size >= len(y)`` every index is returned.
    """
    n = int(y.numel())
    if size >= n:
        return torch.arange(n)
    y = y.reshape(-1).cpu()
    classes, inverse = torch.unique(y, return_inverse=True)
    rank = torch.empty(n, dtype=torch.int64)
    for c in range(len(classes)):
        idx = torch.nonzero(inverse == c).flatten()
        rank[idx] = torch.arange(len(idx))
    # key: rank first, then the class's first appearance, then position
    first = torch.full((len(classes),), n, dtype=torch.int64)
    first.scatter_reduce_(0, inverse, torch.arange(n), reduce="amin")
    key = rank * (n * n) + first[inverse] * n + torch.arange(n)
    chosen = torch.argsort(key)[:size]
    return torch.sort(chosen).values


def trust_scores(updates: Tensor, server_update: Tensor) -> Tensor:
    """TS_i = ReLU(cos(g_i, g_0)) (Eq. 3), float64; a zero g_i or zero g_0 gives TS_i = 0."""
    u = updates.to(torch.float64)
    g0 = server_update.to(torch.float64)
    n0 = torch.linalg.vector_norm(g0)
    norms = torch.linalg.vector_norm(u, dim=1)
    denom = norms * n0
    dots = (u * g0.unsqueeze(0)).sum(dim=1)
    cos = torch.where(denom > 0, dots / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(dots))
    return torch.clamp(cos, min=0.0)


def fltrust_combine(updates: Tensor, server_update: Tensor) -> tuple[Tensor, Tensor, bool]:
    """(g, TS, all_zero): g = Σ TS_i (‖g_0‖/‖g_i‖) g_i / Σ TS_j (Eqs. 3–5); g = 0 when all TS are 0."""
    ts = trust_scores(updates, server_update)
    total = ts.sum()
    if not bool(total > 0):
        return torch.zeros(updates.shape[1], dtype=updates.dtype, device=updates.device), ts, True
    u = updates.to(torch.float64)
    norms = torch.linalg.vector_norm(u, dim=1)
    n0 = torch.linalg.vector_norm(server_update.to(torch.float64))
    scale = torch.where(ts > 0, n0 / torch.where(norms > 0, norms, torch.ones_like(norms)), torch.zeros_like(norms))
    w = ts * scale / total
    g = (u * w.unsqueeze(1)).sum(dim=0)
    return g.to(updates.dtype), ts, False


@register
class FLTrust(Defense):
    """FLTrust: trust scores from the cosine to a server update trained on a clean root set (NDSS 2021).

    Parameters
    ----------
    root_size:
        number of root samples taken from ``context.server_data`` (default 100, the paper's default |D_0|);
        the config key ``data.server_holdout`` must provide at least one sample.
    lr, momentum, weight_decay, epochs, batch_size:
        the server's local SGD (defaults 0.01, 0.9, 0.0, 1, 64: the benign settings used in this project's
        reproduction set-up; the paper uses the same procedure as the clients).
    server_lr:
        the global learning rate η (α in the paper), default 1.0.

    Needs ``context.server_data`` and ``context.local_train`` (set ``data.server_holdout`` > 0 in the config).
    ``info``: accepted (TS > 0), all_zero, server_update_norm, ts_mean, ts_min, ts_max, root_size.
    """

    name = "fltrust"
    summary = "Trust scores ReLU(cos) to a server update trained on a clean root set; magnitudes normalised"
    paper = "Cao et al., FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping, NDSS 2021"

    def __init__(
        self,
        server_data: tuple[Tensor, Tensor] | None = None,
        root_size: int = 100,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        epochs: int = 1,
        batch_size: int = 64,
        server_lr: float = 1.0,
        local_train: LocalTrain | None = None,
    ):
        self.check_params(root_size, lr, momentum, weight_decay, epochs, batch_size, server_lr)
        if server_data is None or len(server_data[1]) == 0:
            raise ParameterError(
                "fltrust needs a clean root dataset on the server: set data.server_holdout > 0 in the config "
                "(context.server_data is missing or empty)"
            )
        if local_train is None:
            raise ParameterError("fltrust needs local training to compute its server update (context.local_train; "
                                 "the simulator provides it)")
        self.root_size = int(root_size)
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.server_lr = float(server_lr)
        x, y = server_data
        idx = select_root_set(y, self.root_size)
        self._root_x = x[idx]
        self._root_y = y[idx]
        self._local_train = local_train

    context_args = ("server_data", "local_train")

    @staticmethod
    def check_params(root_size: int, lr: float, momentum: float, weight_decay: float, epochs: int, batch_size: int,
                     server_lr: float) -> None:
        require(is_int(root_size) and root_size >= 1, "root_size", root_size, "allowed: an integer >= 1")
        require(is_finite_number(lr) and lr > 0, "lr", lr, "allowed: a finite number > 0")
        require(is_number(momentum) and 0 <= momentum < 1, "momentum", momentum, "allowed: 0 <= momentum < 1")
        require(is_finite_number(weight_decay) and weight_decay >= 0, "weight_decay",
                weight_decay, "allowed: a finite number >= 0")
        require(is_int(epochs) and epochs >= 1, "epochs", epochs, "allowed: an integer >= 1")
        require(is_int(batch_size) and batch_size >= 1, "batch_size", batch_size, "allowed: an integer >= 1")
        require(is_finite_number(server_lr) and server_lr > 0, "server_lr", server_lr,
                "allowed: a finite number > 0")

    @classmethod
    def context_values(cls, context: DefenseContext) -> dict[str, Any]:
        return {"server_data": context.server_data, "local_train": context.local_train}

    @property
    def root_set(self) -> tuple[Tensor, Tensor]:
        return self._root_x, self._root_y

    def _server_update(self, inp: RoundInput) -> Tensor:
        """g_0: the server's update on the root set, trained from ``inp.global_params`` (Alg. 1, ModelUpdate)."""
        gen = inp.generator
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
        server_gen = torch.Generator().manual_seed(seed)
        settings = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                    "epochs": self.epochs, "batch_size": self.batch_size}
        return self._local_train(inp.global_params, self._root_x, self._root_y, settings, server_gen)

    def _aggregate(self, inp: RoundInput) -> Aggregate:
        g = inp.global_params
        upd = inp.updates
        g0 = self._server_update(inp).to(device=upd.device, dtype=upd.dtype)
        if g0.shape != g.shape:
            raise ValueError(f"fltrust: server update has shape {tuple(g0.shape)}, the model has {tuple(g.shape)}")
        train = inp.layout.trainable_mask(device=upd.device)
        buf = ~train
        agg_tr, ts, all_zero = fltrust_combine(upd[:, train], g0[train])
        new = g.clone()
        if not all_zero:
            new[train] = g[train] + self.server_lr * agg_tr
            if bool(buf.any()):
                w = (ts / ts.sum()).to(upd.dtype)
                new[buf] = g[buf] + (upd[:, buf] * w.unsqueeze(1)).sum(dim=0)
        accepted = (ts > 0).cpu()
        info = {
            "accepted": float(accepted.sum()),
            "all_zero": float(all_zero),
            "server_update_norm": float(torch.linalg.vector_norm(g0[train].to(torch.float64))),
            "ts_mean": float(ts.mean()),
            "ts_min": float(ts.min()),
            "ts_max": float(ts.max()),
            "root_size": float(len(self._root_y)),
        }
        return Aggregate(new, accepted, info)
