"""Local training of one client, on in-memory tensors.

One working model is reused for every client (its parameters are overwritten from the global vector),
batches are index slices of the client's tensors, and nothing in the step loop synchronises with Python
(no ``.item()``). ``channels_last`` is used for 4-D inputs where it is faster on this CPU
(docs/performance.md, Training).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels import load as kernels_load
from ..models import ParamLayout, flatten_params, load_flat_params

__all__ = ["TrainSettings", "LocalTrainer", "ParallelTrainer", "TrainJob", "lr_at_epoch", "local_train_function"]

Poisoner = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
# (x, y, settings, generator, poisoner or None[, hooks or None]): the arguments of LocalTrainer.train after
# the global model. ``hooks`` (attacks.TrainHooks) are None for benign clients.
# (a 5-tuple without hooks is accepted too)
TrainJob = tuple[Tensor, Tensor, "TrainSettings", torch.Generator, Optional[Poisoner], Optional[Any]]


@dataclass(frozen=True)
class TrainSettings:
    """SGD settings of one client's local training.

    ``milestones`` are fractions of ``epochs`` after which the learning rate is multiplied by ``gamma``
    (DBA/Fedward attackers: ``(0.2, 0.8)``, γ = 0.1, i.e. MultiStepLR at 0.2E and 0.8E, stepped per epoch).
    A fractional milestone takes effect from epoch ⌈m·E⌉ (DBA's own code silently never decays there).
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 64
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        for name, ok, allowed in (
            ("lr", self.lr > 0, "must be > 0"),
            ("momentum", 0 <= self.momentum < 1, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("epochs", self.epochs >= 1, "must be >= 1"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            ("gamma", self.gamma > 0, "must be > 0"),
        ):
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; {allowed}")
        if any(not 0 <= m <= 1 for m in self.milestones):
            raise ValueError(f"milestones={self.milestones!r} is invalid; fractions of the epochs in [0, 1]")


def lr_at_epoch(settings: TrainSettings, epoch: int) -> float:
    """Learning rate used in 0-based ``epoch``: lr · γ^(#milestones with ⌈m·E⌉ <= epoch)."""
    passed = sum(1 for m in settings.milestones if math.ceil(m * settings.epochs - 1e-9) <= epoch)
    return settings.lr * settings.gamma**passed


class FusedSGD:
    """``torch.optim.SGD(params, lr, momentum, weight_decay=..., fused=True)``'s step, bit for bit, without the
    optimizer's per-step Python work (grouping the tensors by device and dtype, state look-ups): one
    ``torch._fused_sgd_`` call on lists built once. The lr may be changed between steps (``self.lr``).
    """

    def __init__(self, params: Sequence[Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self._buffers: list[Optional[Tensor]] = [None] * len(self.params)

    def step(self) -> None:
        """One step for the parameters that have a gradient (the others are skipped, as torch's SGD does)."""
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        if self.momentum == 0:
            self._fused(have, [], False)
            return
        new = [i for i in have if self._buffers[i] is None]
        for i in new:
            self._buffers[i] = torch.empty_like(self.params[i].grad)  # type: ignore[arg-type]
        # a buffer's first step: buf = grad (torch's is_first_step); one call per kind (an empty one is skipped)
        self._fused(new, [self._buffers[i] for i in new], True)
        old = [i for i in have if i not in new]
        self._fused(old, [self._buffers[i] for i in old], False)

    def _fused(self, idx: list[int], buffers: list[Any], first: bool) -> None:
        if not idx:
            return
        torch._fused_sgd_(
            [self.params[i] for i in idx], [self.params[i].grad for i in idx], buffers,
            weight_decay=self.weight_decay, momentum=self.momentum, lr=self.lr, dampening=0.0, nesterov=False,
            maximize=False, is_first_step=first, grad_scale=None, found_inf=None)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class LocalTrainer:
    """Trains clients one after another on a single reusable model; returns each client's update Δ = W − G."""

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        device: str | torch.device = "cpu",
        channels_last: bool = True,
        fast_kernels: Optional[bool] = None,
    ):
        """``fast_kernels``: None (default) uses fedshield's C kernels where they are available on the CPU with
        ``channels_last`` (:mod:`fedshield.kernels`) and then also the fused SGD step (:class:`FusedSGD`), so
        ``channels_last=False`` alone gives a plain loop's arithmetic; False gives PyTorch's plain
        arithmetic (what a plain training loop computes, bit for bit in the same memory format); True requires
        the kernels (:class:`~fedshield.kernels.KernelBuildError` when they cannot be built)."""
        self.device = torch.device(device)
        self.model = model_fn().to(self.device)
        self.layout = ParamLayout.from_module(self.model)
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        on_cpu = self.device.type == "cpu"
        if fast_kernels is None:  # auto: the kernels are a channels_last fast path
            fast_kernels = on_cpu and channels_last and kernels_load() is not None
        elif fast_kernels:
            if not on_cpu:
                raise ValueError(f"fast_kernels=True needs the CPU; the device is {self.device}")
            kernels_load(strict=True)
        self.fast_kernels = bool(fast_kernels)
        if hasattr(self.model, "fast_kernels"):
            self.model.fast_kernels = self.fast_kernels

    def _prep(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train(
        self,
        global_params: Tensor,
        x: Tensor,
        y: Tensor,
        settings: TrainSettings,
        generator: torch.Generator,
        poisoner: Optional[Poisoner] = None,
        hooks: Optional[Any] = None,
    ) -> Tensor:
        """Train from ``global_params`` on (x, y) and return the flat update (d,).

        Each epoch draws ``torch.randperm(len(x), generator=generator)`` and walks it in batches (the last one
        may be short), exactly the order a ``DataLoader(shuffle=True, generator=...)`` produces.
        ``poisoner(xb, yb)`` may rewrite each batch (data-poisoning attacks). ``hooks`` (an
        :class:`fedshield.attacks.TrainHooks`, model-poisoning attacks) get the trainable tensors in layout
        order: ``begin`` before the first step, ``loss`` to rewrite the loss, ``after_backward``,
        ``after_step`` (1-based step count) and ``end`` after the last step. Benign clients pass None and
        run exactly the plain loop.
        """
        if len(x) == 0:
            raise ValueError("a client with no training samples cannot train")
        model = self.model
        if self.device.type != "cpu":  # one host-to-device copy per client, not one per batch
            x, y = x.to(self.device), y.to(self.device)
        load_flat_params(model, global_params.to(self.device), self.layout)
        model.train()
        opt: Any
        if self.fast_kernels:
            opt = FusedSGD([p for p in model.parameters() if p.requires_grad], settings.lr, settings.momentum,
                           settings.weight_decay)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                  weight_decay=settings.weight_decay)
        n = len(x)
        bs = settings.batch_size
        params: list[Tensor] = []
        if hooks is not None:
            named = dict(model.named_parameters())
            entries = self.layout.trainable_entries()
            params = [named[e.name] for e in entries]
            g = global_params.to(self.device)
            hooks.begin(params, [g[e.slice].view(e.shape) for e in entries])
        step = 0
        own_loss = getattr(model, "training_loss", None)  # models with their own objective (the autoencoder)
        for epoch in range(settings.epochs):
            lr = lr_at_epoch(settings, epoch)
            if self.fast_kernels:
                opt.lr = lr
            else:
                for group in opt.param_groups:
                    group["lr"] = lr
            perm = torch.randperm(n, generator=generator)
            for start in range(0, n, bs):
                idx = perm[start : start + bs]
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)  # = x[idx], y[idx]; cheaper
                if poisoner is not None:
                    xb, yb = poisoner(xb, yb)
                xb = self._prep(xb)
                yb = yb.to(self.device, non_blocking=True)
                opt.zero_grad()  # set_to_none
                loss = own_loss(xb, yb) if own_loss is not None else F.cross_entropy(model(xb), yb)
                if hooks is None:
                    loss.backward()
                    opt.step()
                else:
                    hooks.loss(loss, params).backward()
                    hooks.after_backward(params)
                    opt.step()
                    step += 1
                    hooks.after_step(params, step)
        if hooks is not None:
            hooks.end(params)
        return flatten_params(model, self.layout).to(global_params.device) - global_params


class ParallelTrainer:
    """Trains several clients at once in ``workers`` Python threads, one model and one intra-op thread each.

    On this CPU two single-threaded clients side by side beat one client on two threads
    (docs/performance.md, Training); torch releases the GIL inside its kernels, so threads suffice. Each
    client's result depends only on its own generator and the global model, so it is the same whichever worker trains it; with the default
    ``workers`` fixed in the config (not the machine's core count) results do not depend on the machine.
    ``workers=1`` trains sequentially with torch's own threading.
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        workers: int = 1,
        device: str | torch.device = "cpu",
        channels_last: bool = True,
        fast_kernels: Optional[bool] = None,
    ):
        if workers < 1:
            raise ValueError(f"workers={workers} is invalid; must be >= 1")
        self.workers = workers
        self._model_fn = model_fn
        self._device = device
        self._channels_last = channels_last
        self._fast_kernels = fast_kernels
        self._local = threading.local()
        self.main = LocalTrainer(model_fn, device, channels_last, fast_kernels)
        # OpenMP's thread count is per calling thread: each worker sets its own to 1 (the main thread keeps its).
        self._pool = (
            ThreadPoolExecutor(workers, thread_name_prefix="client", initializer=torch.set_num_threads, initargs=(1,))
            if workers > 1
            else None
        )

    @property
    def fast_kernels(self) -> bool:
        """Whether the clients train with fedshield's C kernels (see :class:`LocalTrainer`)."""
        return self.main.fast_kernels

    def _trainer(self) -> LocalTrainer:
        t = getattr(self._local, "trainer", None)
        if t is None:
            t = self._local.trainer = LocalTrainer(self._model_fn, self._device, self._channels_last, self._fast_kernels)
        return t

    def train_many(self, global_params: Tensor, jobs: Sequence[TrainJob]) -> list[Tensor]:
        """Updates of ``jobs`` in order."""
        if self._pool is None:
            return [self.main.train(global_params, *job) for job in jobs]
        return list(self._pool.map(lambda job: self._trainer().train(global_params, *job), jobs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def local_train_function(
    model_fn: Callable[[], nn.Module], device: str | torch.device = "cpu"
) -> Callable[[Tensor, Tensor, Tensor, Mapping[str, Any], torch.Generator], Tensor]:
    """``local_train(global_params, x, y, settings, generator) -> update``: the simulator's local training for
    defenses that train on the server's data (``DefenseContext.local_train``, FLTrust). ``settings`` are
    :class:`TrainSettings` fields. The model is built on the first call."""
    trainer: list[LocalTrainer] = []

    def local_train(global_params: Tensor, x: Tensor, y: Tensor, settings: Mapping[str, Any],
                    generator: torch.Generator) -> Tensor:
        if not trainer:
            trainer.append(LocalTrainer(model_fn, device))
        return trainer[0].train(global_params, x, y, TrainSettings(**settings), generator)

    return local_train
