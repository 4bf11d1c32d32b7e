"""PNG plots of a run's metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

__all__ = ["plot_run"]


def plot_run(rows: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """MA and BA per evaluated round, and accepted/malicious counts per round, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ev = [r for r in rows if not math.isnan(r["ma"])]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=[3, 1.4])
    ax1.plot([r["round"] for r in ev], [r["ma"] for r in ev], marker=".", label="MA (main task)")
    if any(not math.isnan(r["ba"]) for r in ev):
        ax1.plot([r["round"] for r in ev], [r["ba"] for r in ev], marker=".", color="tab:red", label="BA (backdoor)")
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_ylabel("accuracy")
    ax1.grid(alpha=0.3)
    ax1.legend(loc="center right")
    ax1.set_title(title)
    rounds = [r["round"] for r in rows]
    ax2.bar(rounds, [r["tn"] for r in rows], color="tab:green", label="benign accepted")
    ax2.bar(rounds, [r["fn"] for r in rows], bottom=[r["tn"] for r in rows], color="tab:red", label="malicious accepted")
    ax2.set_xlabel("round")
    ax2.set_ylabel("clients")
    ax2.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


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
