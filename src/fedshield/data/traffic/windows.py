"""Windows of consecutive flows, for sequence models (``model: gru``; ``data.traffic.window``).

Within each split, rows are in capture order (the preprocessing keeps it). A window is ``length`` consecutive rows
of the same device (rows of datasets without devices form one stream), sliding by one row; its label, family and
device are those of its LAST flow: the model decides about the newest flow given the ones before it. A stream
shorter than ``length`` yields no window.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ...core.errors import ConfigError, DataError

__all__ = ["window_ends", "make_windows"]


def window_ends(device: Optional[np.ndarray], n: int, length: int) -> np.ndarray:
    """Indices of the rows that end a window: the ``length``-th and later rows of each device's stream."""
    if length < 1:
        raise ConfigError(f"data.traffic.window={length} is invalid; must be >= 1")
    dev = np.zeros(n, dtype=np.int64) if device is None else np.asarray(device)
    ends = []
    for d in np.unique(dev):
        rows = np.flatnonzero(dev == d)
        ends.append(rows[length - 1 :])
    return np.sort(np.concatenate(ends)) if ends else np.empty(0, dtype=np.int64)


def make_windows(x: np.ndarray, device: Optional[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows (W, length, F), the row index each window ends at (W,)); rows of one device, in order."""
    dev = np.zeros(len(x), dtype=np.int64) if device is None else np.asarray(device)
    out, ends = [], []
    for d in np.unique(dev):
        rows = np.flatnonzero(dev == d)
        if rows.size < length:
            continue
        idx = rows[np.arange(rows.size - length + 1)[:, None] + np.arange(length)[None, :]]
        out.append(x[idx])
        ends.append(rows[length - 1 :])
    if not out:
        raise DataError(f"no device has {length} consecutive flows; use a shorter data.traffic.window")
    end = np.concatenate(ends)
    order = np.argsort(end, kind="stable")
    return np.concatenate(out)[order].astype(np.float32), end[order]
