"""Client partitions of a labelled dataset (docs/partitions.md).

Every function is pure and deterministic for a ``seed`` (all randomness comes from
``numpy.random.default_rng(seed)``), uses every sample at most once, and returns one sorted int64 index
tensor per client. The per-method functions return positions into the ``labels`` they are given;
:func:`partition` can restrict the split to a subset ``indices`` (for example to hold out a server slice)
and then returns indices into the full ``labels`` tensor.
"""

from __future__ import annotations

from typing import Callable, Final

import numpy as np
import torch
from torch import Tensor

from ..core.numeric import is_finite_number, is_int, is_number
from ..core.registry import Registry

__all__ = [
    "PARTITIONS",
    "PARTITION_METHODS",
    "iid",
    "dirichlet",
    "deg_niid",
    "fang_q",
    "partition",
    "class_histogram",
]

PARTITION_METHODS: Final = ("iid", "dirichlet", "deg_niid", "fang_q")
PARTITIONS: Registry[Callable[..., list[Tensor]]] = Registry("partition")


# ------------------------------------------------------------------------------------------- validation


def _bad(name: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"{name}={value!r} is invalid; {allowed}")


def _check_clients(num_clients: int) -> None:
    if not is_int(num_clients) or num_clients < 1:
        raise _bad("num_clients", num_clients, "must be an integer >= 1")


def _labels_np(labels: Tensor) -> np.ndarray:
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.dtype.is_floating_point or labels.is_complex():
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a 1-D integer tensor, got {shape}")
    out = labels.detach().cpu().numpy().astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError(f"labels must be >= 0, found {out.min()}")
    return out


def _num_classes(labels: np.ndarray, num_classes: int | None) -> int:
    present = int(labels.max()) + 1 if labels.size else 0
    if num_classes is None:
        return max(present, 1)
    if not is_int(num_classes) or num_classes < 1:
        raise _bad("num_classes", num_classes, "must be an integer >= 1")
    if present > num_classes:
        raise _bad("num_classes", num_classes, f"labels go up to {present - 1}")
    return int(num_classes)


def _check_unit(name: str, value: float) -> float:
    if not is_number(value) or not 0.0 <= value <= 1.0:
        raise _bad(name, value, "must be a number in [0, 1]")
    return float(value)


def _parts(client_of: np.ndarray, num_clients: int) -> list[Tensor]:
    """Group sample positions by their client id (-1 = unused); each part sorted ascending."""
    order = np.argsort(client_of, kind="stable")
    counts = np.bincount(client_of[client_of >= 0], minlength=num_clients)
    start = int((client_of < 0).sum())
    bounds = np.concatenate([[0], np.cumsum(counts)]) + start
    return [torch.from_numpy(order[bounds[k] : bounds[k + 1]].astype(np.int64)) for k in range(num_clients)]


# ---------------------------------------------------------------------------------------------- methods


def iid(num_samples_or_indices: int | Tensor, num_clients: int, seed: int) -> list[Tensor]:
    """Uniform shuffle, then equal split; the first ``N % K`` clients get one extra sample.

    Given an int N the parts index ``range(N)``; given a 1-D index tensor they hold its elements.
    """
    _check_clients(num_clients)
    if isinstance(num_samples_or_indices, Tensor):
        if num_samples_or_indices.dim() != 1 or num_samples_or_indices.dtype.is_floating_point:
            raise ValueError("iid: indices must be a 1-D integer tensor")
        pool = num_samples_or_indices.detach().cpu().numpy().astype(np.int64)
    else:
        n = num_samples_or_indices
        if not is_int(n) or n < 0:
            raise _bad("num_samples", num_samples_or_indices, "must be an integer >= 0")
        pool = np.arange(int(num_samples_or_indices), dtype=np.int64)
    shuffled = pool[np.random.default_rng(seed).permutation(pool.size)]
    base, extra = divmod(pool.size, num_clients)
    sizes = [base + (k < extra) for k in range(num_clients)]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [torch.from_numpy(np.sort(shuffled[bounds[k] : bounds[k + 1]])) for k in range(num_clients)]


def dirichlet(labels: Tensor, num_clients: int, alpha: float, seed: int) -> list[Tensor]:
    """Per-class Dirichlet split (docs/partitions.md, Dirichlet).

    For each class c in ascending order: shuffle its samples, draw p ~ Dir(alpha·1_K), and let client k take
    the next ``round(|c|·p_k)`` samples, truncated at the end of the list. Rounding can leave a few samples of
    a class unassigned (as in the DBA / Bagdasaryan code); they are not used.
    """
    _check_clients(num_clients)
    if not is_finite_number(alpha) or alpha <= 0:
        raise _bad("alpha", alpha, "must be > 0")
    y = _labels_np(labels)
    rng = np.random.default_rng(seed)
    client_of = np.full(y.size, -1, dtype=np.int64)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        counts = np.round(members.size * rng.dirichlet(np.full(num_clients, float(alpha)))).astype(np.int64)
        ends = np.minimum(np.cumsum(counts), members.size)
        starts = np.concatenate([[0], ends[:-1]])
        for k in range(num_clients):
            client_of[members[starts[k] : ends[k]]] = k
    return _parts(client_of, num_clients)


def deg_niid(
    labels: Tensor, num_clients: int, fraction: float, seed: int, num_classes: int | None = None
) -> list[Tensor]:
    """FLAME's Deg_nIID split (docs/partitions.md, DegNIID).

    Client k belongs to group ``k % L`` (L = ``num_classes``, default ``max(labels) + 1``). Every client gets
    ``n_c = N // K`` samples: first ``round(fraction·n_c)`` of its group's class, drawn without replacement
    (all clients do this before any random fill), then the rest drawn uniformly from the samples nobody has
    yet. If a class runs out, its clients take what is left of it and get the shortfall from the random
    fill. ``fraction=0`` is IID, ``fraction=1`` gives each client a single class while the class lasts.
    The ``N % K`` samples left over are not used.
    """
    _check_clients(num_clients)
    fraction = _check_unit("fraction", fraction)
    y = _labels_np(labels)
    num_groups = _num_classes(y, num_classes)
    rng = np.random.default_rng(seed)
    n_c = y.size // num_clients
    want = int(round(fraction * n_c))
    class_pools = [rng.permutation(np.flatnonzero(y == c)) for c in range(num_groups)]
    client_of = np.full(y.size, -1, dtype=np.int64)
    taken = np.zeros(num_clients, dtype=np.int64)
    for k in range(num_clients):
        pool = class_pools[k % num_groups]
        chosen, class_pools[k % num_groups] = pool[:want], pool[want:]
        client_of[chosen] = k
        taken[k] = len(chosen)
    rest = rng.permutation(np.flatnonzero(client_of < 0))
    start = 0
    for k in range(num_clients):
        need = n_c - int(taken[k])
        client_of[rest[start : start + need]] = k
        start += need
    return _parts(client_of, num_clients)


def fang_q(labels: Tensor, num_clients: int, q: float, seed: int, num_classes: int | None = None) -> list[Tensor]:
    """Fang et al.'s / FLTrust's degree of non-IID (docs/partitions.md, FangQ).

    Client k belongs to group ``k % L`` (L = ``num_classes``); ``num_clients >= L`` so no group is empty. A
    sample with label l goes to group l with probability q, else to one of the other L − 1 groups uniformly,
    then to a uniformly chosen client of that group. ``q = 1/L`` is IID; every sample is used.
    """
    _check_clients(num_clients)
    q = _check_unit("q", q)
    y = _labels_np(labels)
    num_groups = _num_classes(y, num_classes)
    if num_clients < num_groups:
        raise _bad("num_clients", num_clients, f"fang_q needs at least one client per class group (>= {num_groups})")
    rng = np.random.default_rng(seed)
    stay = rng.random(y.size) < q
    if num_groups > 1:
        other = (y + 1 + rng.integers(0, num_groups - 1, size=y.size)) % num_groups
    else:
        other = y
    group = np.where(stay, y, other)
    group_size = (num_clients - group + num_groups - 1) // num_groups  # clients g, g+L, g+2L, ... < K
    member = np.floor(rng.random(y.size) * group_size).astype(np.int64)
    return _parts(group + num_groups * member, num_clients)


# --------------------------------------------------------------------------------------------- dispatch


PARTITIONS.register(iid, "iid", "uniformly at random, equal sizes")
PARTITIONS.register(dirichlet, "dirichlet", "label skew: class shares per client ~ Dirichlet(alpha) (data.alpha)")
PARTITIONS.register(deg_niid, "deg_niid", "FLAME's degree of non-IID: a share (data.fraction) from one class group")
PARTITIONS.register(fang_q, "fang_q", "Fang et al.'s q: a client's main group gets probability q (data.q)")


def partition(
    labels: Tensor,
    num_clients: int,
    method: str,
    seed: int,
    *,
    alpha: float | None = None,
    fraction: float | None = None,
    q: float | None = None,
    num_classes: int | None = None,
    indices: Tensor | None = None,
) -> list[Tensor]:
    """Split ``labels`` (or the subset ``indices`` of it) among ``num_clients`` with ``method``.

    ``method`` is one of :data:`PARTITION_METHODS`; ``alpha`` is required by ``dirichlet``, ``fraction`` by
    ``deg_niid`` and ``q`` by ``fang_q``, and passing one to a method that does not use it is an error.
    ``num_classes`` defaults to ``max(labels) + 1`` over the full tensor. Returned indices always index the
    full ``labels`` tensor.
    """
    params = {"alpha": alpha, "fraction": fraction, "q": q}
    needs = {"iid": None, "dirichlet": "alpha", "deg_niid": "fraction", "fang_q": "q"}
    if method not in needs:
        raise _bad("method", method, f"choose one of {list(PARTITION_METHODS)}")
    need = needs[method]
    for name, value in params.items():
        if name == need and value is None:
            raise ValueError(f"{name} is required for partition method {method!r}")
        if name != need and value is not None:
            raise ValueError(f"{name}={value!r} is not used by partition method {method!r}; leave it None")
    y_full = _labels_np(labels)
    num_classes = _num_classes(y_full, num_classes) if method in ("deg_niid", "fang_q") else None
    if indices is None:
        subset = np.arange(y_full.size, dtype=np.int64)
    else:
        if not isinstance(indices, Tensor) or indices.dim() != 1 or indices.dtype.is_floating_point:
            raise ValueError("indices must be a 1-D integer tensor")
        subset = indices.detach().cpu().numpy().astype(np.int64)
        if subset.size and (subset.min() < 0 or subset.max() >= y_full.size):
            raise ValueError(f"indices must lie in [0, {y_full.size}), found {subset.min()}..{subset.max()}")
        if np.unique(subset).size != subset.size:
            raise ValueError("indices must not repeat a sample")
    sub_labels = torch.from_numpy(y_full[subset])
    if method == "iid":
        return iid(torch.from_numpy(subset), num_clients, seed)
    if method == "dirichlet":
        parts = dirichlet(sub_labels, num_clients, alpha, seed)  # type: ignore[arg-type]
    elif method == "deg_niid":
        parts = deg_niid(sub_labels, num_clients, fraction, seed, num_classes)  # type: ignore[arg-type]
    else:
        parts = fang_q(sub_labels, num_clients, q, seed, num_classes)  # type: ignore[arg-type]
    mapping = torch.from_numpy(subset)
    return [torch.sort(mapping[p]).values for p in parts]


def class_histogram(labels: Tensor, parts: list[Tensor], num_classes: int) -> Tensor:
    """``(K, L)`` int64 counts: row k is how many samples of each class client k holds."""
    y = labels.detach().cpu().to(torch.int64)
    hist = torch.zeros(len(parts), num_classes, dtype=torch.int64)
    for k, part in enumerate(parts):
        counts = torch.bincount(y[part.to(torch.int64)], minlength=num_classes)
        if counts.numel() > num_classes:
            raise _bad("num_classes", num_classes, f"client {k} holds label {counts.numel() - 1}")
        hist[k] = counts
    return hist
