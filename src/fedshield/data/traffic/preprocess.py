"""From parsed traffic (:class:`~.table.RawTraffic`) to model-ready arrays, with every step stated.

In this order, each fitted on the TRAINING split only and then applied unchanged to the test split:

1. **subsample** (``max_rows``): a seeded uniform sample of rows, for quick runs on gigabyte datasets;
2. **split**: datasets published as a train/test pair keep it; the others get a seeded stratified split,
   ``test_fraction`` of every (family, device) group to the test split (:func:`split_rows`);
3. **drop identifiers**: the readers never pass IPs, timestamps or flow ids on; ``drop_ports`` also drops the
   port-number columns;
4. **non-finite values** (counted per column in ``report["nonfinite"]``): +inf → the column's largest finite
   training value, −inf → its smallest, NaN → its training median (0 if the column has no finite value);
5. **log1p** (optional): x → sign(x)·log(1 + |x|), for heavy-tailed byte/packet counts and rates;
6. **scaling**: ``standard`` (x − mean) / std (std 0 → 1) or ``minmax`` (x − min) / (max − min) (range 0 → 1),
   statistics from the training split; ``none`` leaves the values;
7. **one-hot categoricals**: one column per value seen in training, the ``max_categories`` most frequent
   per column (ties by value), values outside them (or unseen in training) set none of the columns;
8. **labels**: ``binary`` (0 benign, 1 attack) or ``multiclass`` (the family index: 0 benign, then the
   attack families in alphabetical order).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional

import numpy as np

from ...core.errors import ConfigError, DataError
from .table import BENIGN, RawTraffic

__all__ = ["TrafficOptions", "PreparedTraffic", "preprocess", "split_rows", "replace_nonfinite"]


@dataclass(frozen=True)
class TrafficOptions:
    """How raw traffic becomes arrays (see the module docstring); part of the cache key."""

    label: Literal["binary", "multiclass"] = "binary"
    scaling: Literal["standard", "minmax", "none"] = "standard"
    log1p: bool = True
    drop_ports: bool = True
    test_fraction: float = 0.2  # datasets without a published test split
    split_seed: int = 0
    max_rows: Optional[int] = None
    max_categories: int = 32

    def __post_init__(self) -> None:
        if self.label not in ("binary", "multiclass"):
            raise ConfigError(f"label={self.label!r} is invalid; allowed: 'binary', 'multiclass'")
        if self.scaling not in ("standard", "minmax", "none"):
            raise ConfigError(f"scaling={self.scaling!r} is invalid; allowed: 'standard', 'minmax', 'none'")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction={self.test_fraction!r} is invalid; must be in (0, 1)")
        if self.max_rows is not None and self.max_rows < 2:
            raise ConfigError(f"max_rows={self.max_rows!r} is invalid; must be >= 2 or None")
        if self.max_categories < 1:
            raise ConfigError(f"max_categories={self.max_categories!r} is invalid; must be >= 1")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(eq=False)
class PreparedTraffic:
    """Model-ready arrays of one dataset, with what the preprocessing did (``report``)."""

    train_x: np.ndarray  # (N, F) float32
    train_y: np.ndarray  # (N,) int64
    test_x: np.ndarray
    test_y: np.ndarray
    train_family: np.ndarray  # (N,) int64 index into family_names (0 = benign)
    test_family: np.ndarray
    family_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    train_device: Optional[np.ndarray] = None
    test_device: Optional[np.ndarray] = None
    device_names: tuple[str, ...] = ()
    report: dict[str, Any] = field(default_factory=dict)


def split_rows(raw: RawTraffic, test_fraction: float, seed: int) -> np.ndarray:
    """(N,) bool, True for test rows: ``round(test_fraction · size)`` rows of every (family, device) group,
    drawn with ``numpy.random.default_rng(seed)``; groups are visited in sorted order."""
    rng = np.random.default_rng(seed)
    device = raw.device if raw.device is not None else np.zeros(len(raw), dtype=np.int64)
    keys = np.array([f"{f}\x00{d}" for f, d in zip(raw.family, device)], dtype=object)
    is_test = np.zeros(len(raw), dtype=bool)
    for k in sorted(set(keys.tolist())):
        members = np.flatnonzero(keys == k)
        take = int(round(test_fraction * members.size))
        is_test[rng.permutation(members)[:take]] = True
    return is_test


def replace_nonfinite(train: np.ndarray, test: np.ndarray, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rule 4 of the module docstring, column by column; returns copies and ``{column: {posinf, neginf, nan}}``
    counts (training and test rows together) for the columns that had any."""
    train, test = train.copy(), test.copy()
    counts: dict[str, dict[str, int]] = {}
    for j, name in enumerate(names):
        col = train[:, j]
        finite = col[np.isfinite(col)]
        hi, lo, med = (finite.max(), finite.min(), float(np.median(finite))) if finite.size else (0.0, 0.0, 0.0)
        c = {"posinf": 0, "neginf": 0, "nan": 0}
        for arr in (train, test):
            v = arr[:, j]
            pos, neg, nan = np.isposinf(v), np.isneginf(v), np.isnan(v)
            c["posinf"] += int(pos.sum())
            c["neginf"] += int(neg.sum())
            c["nan"] += int(nan.sum())
            v[pos], v[neg], v[nan] = hi, lo, med
        if any(c.values()):
            counts[name] = c
    return train, test, counts


def _one_hot(values: np.ndarray, vocab: list[str]) -> np.ndarray:
    index = {v: i for i, v in enumerate(vocab)}
    out = np.zeros((values.size, len(vocab)), dtype=np.float32)
    cols = np.array([index.get(v, -1) for v in values], dtype=np.int64)
    hit = cols >= 0
    out[np.flatnonzero(hit), cols[hit]] = 1.0
    return out


def preprocess(raw: RawTraffic, opts: TrafficOptions) -> PreparedTraffic:
    """Apply the steps of the module docstring to ``raw``."""
    report: dict[str, Any] = {"dataset": raw.name, "rows_read": len(raw), "options": opts.as_dict()}
    rows = np.arange(len(raw))
    if opts.max_rows is not None and len(raw) > opts.max_rows:
        rows = np.sort(np.random.default_rng([opts.split_seed, 1]).choice(len(raw), opts.max_rows, replace=False))
    if raw.is_test is not None:
        is_test = raw.is_test[rows]
        report["split"] = "published train/test files"
    else:
        sub = RawTraffic(raw.name, raw.numeric[rows], raw.numeric_names, family=raw.family[rows],
                         device=None if raw.device is None else raw.device[rows])
        is_test = split_rows(sub, opts.test_fraction, opts.split_seed)
        report["split"] = f"seeded stratified split, test_fraction={opts.test_fraction}, seed={opts.split_seed}"
    if raw.order is not None:  # keep capture order inside each split (windows of consecutive flows)
        perm = np.argsort(raw.order[rows], kind="stable")
        rows, is_test = rows[perm], is_test[perm]
    tr, te = rows[~is_test], rows[is_test]
    if tr.size == 0 or te.size == 0:
        raise DataError(f"{raw.name}: the split left an empty training or test set ({tr.size}/{te.size} rows)")

    keep = [j for j, n in enumerate(raw.numeric_names) if not (opts.drop_ports and n in raw.port_columns)]
    names = tuple(raw.numeric_names[j] for j in keep)
    report["dropped_columns"] = [n for n in raw.numeric_names if n not in names]
    x_tr, x_te, report["nonfinite"] = replace_nonfinite(raw.numeric[tr][:, keep], raw.numeric[te][:, keep], names)
    if opts.log1p:
        x_tr, x_te = (np.sign(a) * np.log1p(np.abs(a)) for a in (x_tr, x_te))
    if opts.scaling == "standard":
        shift, scale = x_tr.mean(axis=0), x_tr.std(axis=0)
    elif opts.scaling == "minmax":
        shift, scale = x_tr.min(axis=0), x_tr.max(axis=0) - x_tr.min(axis=0)
    else:
        shift, scale = np.zeros(len(names)), np.ones(len(names))
    scale = np.where(scale > 0, scale, 1.0)
    x_tr, x_te = (x_tr - shift) / scale, (x_te - shift) / scale

    blocks_tr, blocks_te, feat = [x_tr.astype(np.float32)], [x_te.astype(np.float32)], list(names)
    for cname, values in raw.categorical.items():
        uniq, counts = np.unique(values[tr].astype(str), return_counts=True)
        order = sorted(zip(-counts, uniq.tolist()))[: opts.max_categories]
        vocab = [v for _, v in order]
        blocks_tr.append(_one_hot(values[tr].astype(str), vocab))
        blocks_te.append(_one_hot(values[te].astype(str), vocab))
        feat += [f"{cname}={v}" for v in vocab]

    attack_families = sorted(set(raw.family[rows].tolist()) - {BENIGN})
    families = (BENIGN, *attack_families)
    fam_index = {f: i for i, f in enumerate(families)}
    fam_tr = np.array([fam_index[f] for f in raw.family[tr]], dtype=np.int64)
    fam_te = np.array([fam_index[f] for f in raw.family[te]], dtype=np.int64)
    to_y = (lambda f: (f > 0).astype(np.int64)) if opts.label == "binary" else (lambda f: f)
    report.update(
        train_rows=int(tr.size), test_rows=int(te.size), features=len(feat),
        scaler={"kind": opts.scaling, "shift": shift.tolist(), "scale": scale.tolist()},
        family_counts_train={f: int((fam_tr == i).sum()) for i, f in enumerate(families)},
    )
    dev = raw.device
    return PreparedTraffic(
        train_x=np.concatenate(blocks_tr, axis=1), train_y=to_y(fam_tr),
        test_x=np.concatenate(blocks_te, axis=1), test_y=to_y(fam_te),
        train_family=fam_tr, test_family=fam_te, family_names=families, feature_names=tuple(feat),
        train_device=None if dev is None else dev[tr], test_device=None if dev is None else dev[te],
        device_names=raw.device_names, report=report,
    )
