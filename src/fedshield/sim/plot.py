"""The PNG of one run's metrics (``metrics.png`` in its output folder)."""

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
