"""PNG plots of a run's metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..sim.plot import plot_run

__all__ = ["plot_run", "plot_sweep_curves"]


def plot_sweep_curves(
    runs: Sequence[dict[str, Any]],
    line_key: str,
    metric: str,
    path: str | Path,
    title: str = "",
) -> None:
    """One panel per setting (all labels except ``line_key``), one line per ``line_key`` label.

    ``runs``: dicts with ``labels`` (key → label) and ``rows`` (the run's metrics.csv rows).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in runs:
        setting = tuple(f"{v}" for k, v in r["labels"].items() if k != line_key)
        panels.setdefault(setting, []).append(r)
    if not panels:
        return
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows), squeeze=False, sharey=True)
    for ax, (setting, members) in zip(axes.flat, panels.items()):
        for r in members:
            ev = [row for row in r["rows"] if not math.isnan(row.get(metric, math.nan))]
            ax.plot([row["round"] for row in ev], [row[metric] for row in ev], label=r["labels"][line_key], lw=1.2)
        ax.set_title(" / ".join(setting), fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or f"{metric.upper()} per round")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
