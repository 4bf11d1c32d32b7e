"""How much a sweep's cells move with the seed: ``fedshield report SWEEP --seeds OTHER_SWEEP ...``.

A paper's table is often one run per cell, and a code that sets no seed makes each cell its own draw (the
Fedward authors' code: docs/results/fedward_table1_readings.md, section 4). :func:`seed_spread` puts, for every
cell of ``SWEEP``'s table that the other sweeps also ran (same labels on the table's keys, other seeds), the
value at each seed beside their mean, their range and the paper's value, and counts in how many cells the paper's
value lies within the range and the mean is within ``within`` points of it (or lower).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from .results import collect_results, read_sweep_index
from .table import METRIC_NAMES, table_layout

__all__ = ["seed_spread", "render_seed_spread"]


def seed_spread(
    sweep_dir: str | Path,
    other_dirs: list[str | Path],
    metric: str = "aasr",
    reference: Optional[str | Path] = None,
    within: float = 5.0,
) -> dict[str, Any]:
    """Per cell (the labels of ``sweep_dir``'s table keys) with runs at more than one seed across the sweeps:
    ``{"cell": labels, "values": {seed: value %}, "mean", "low", "high", "paper"}`` (NaN where missing), and
    the counts ``inside`` (paper value within [low, high]) and ``near`` (mean ≤ paper + ``within``) of ``of``
    cells that have a paper value. A seed run twice for one cell is an error: the sweeps overlap."""
    rows_k, cols_k, ref_keys, ref = table_layout(read_sweep_index(sweep_dir), reference)
    keys = rows_k + cols_k
    cells: dict[tuple[str, ...], dict[int, float]] = {}
    order: list[tuple[str, ...]] = []
    for d in [sweep_dir, *other_dirs]:
        for r in collect_results(d):
            missing = [k for k in keys if k not in r["labels"]]
            if missing:
                raise ValueError(f"{d}: run {r['id']} has no label for table key(s) {missing}; the sweeps must share "
                                 f"the table keys {keys}")
            cell = tuple(str(r["labels"][k]) for k in keys)
            if not isinstance(r.get("seed"), int):
                raise ValueError(f"{d}: run {r['id']}'s summary.json records no seed; rerun it")
            seed = r["seed"]
            vals = cells.setdefault(cell, {})
            if cell not in order:
                order.append(cell)
            if seed in vals:
                raise ValueError(f"{d}: cell {' / '.join(cell)} has a second run at seed {seed}; pass sweeps whose "
                                 "seeds do not overlap")
            v = r.get(metric)
            vals[seed] = math.nan if v is None else 100.0 * float(v)
    out = []
    for cell in order:
        vals = cells[cell]
        if len(vals) < 2:
            continue
        finite = [v for v in vals.values() if not math.isnan(v)]
        mean = sum(finite) / len(finite) if finite else math.nan
        paper = ref.get((tuple(cell[keys.index(k)] for k in ref_keys), metric), math.nan)
        out.append({"cell": cell, "values": dict(sorted(vals.items())), "mean": mean,
                    "low": min(finite) if finite else math.nan, "high": max(finite) if finite else math.nan,
                    "paper": paper})
    with_paper = [c for c in out if not (math.isnan(c["paper"]) or math.isnan(c["mean"]))]
    return {
        "keys": keys, "metric": metric, "within": within, "cells": out, "of": len(with_paper),
        "inside": sum(c["low"] <= c["paper"] <= c["high"] for c in with_paper),
        "near": sum(c["mean"] <= c["paper"] + within for c in with_paper),
    }


def render_seed_spread(s: dict[str, Any]) -> list[str]:
    """Markdown lines: one row per cell, a column per seed, then mean, range and the paper's value."""
    if not s["cells"]:
        return []
    seeds = sorted({k for c in s["cells"] for k in c["values"]})
    name = METRIC_NAMES.get(s["metric"], s["metric"])
    f = lambda v: "–" if math.isnan(v) else f"{v:.2f}"  # noqa: E731
    lines = [f"## {name} across seeds", "",
             "| " + " / ".join(s["keys"]) + " | " + " | ".join(f"seed {k}" for k in seeds) + " | mean | range | paper |",
             "|---|" + "---|" * (len(seeds) + 3)]
    for c in s["cells"]:
        lines.append(f"| {' / '.join(c['cell'])} | " + " | ".join(f(c["values"].get(k, math.nan)) for k in seeds)
                     + f" | {f(c['mean'])} | {f(c['low'])}–{f(c['high'])} | {f(c['paper'])} |")
    if s["of"]:
        noun = "cell" if s["of"] == 1 else "cells"
        lines += ["", f"Of the {s['of']} {noun} with a paper value: the paper's {name} lies within our range over seeds "
                      f"in {s['inside']}; our mean is within {s['within']:g} points of it or lower in {s['near']}."]
    return lines + [""]
