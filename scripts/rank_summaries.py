"""A report's ranking counts recomputed from committed ``summary.csv`` files, with cells of one sweep replaced
by another's.

    python scripts/rank_summaries.py GRID_FILE SUMMARY_CSV [SUMMARY_CSV ...] [--metric aasr]

Reads the grid file's ``table`` (rows, columns, ``compare``) and ``reference``, takes every run of the summary
files (the ``summary.csv`` that ``fedshield report`` writes: one row per run, a column per grid key holding
its label), a later file's run replacing an earlier file's run with the same labels, and prints what the
report's Ranking section prints: the (setting, better, than) pairs where the 'better' defense has the lower
metric, the settings where every 'better' defense is below every 'than' defense, the 'better' cells within
``compare.within`` points of the paper's value or lower (ours and the paper's), overall and per value of the
first row key, then every 'better' cell that is not within.

Used for docs/results/fedward_table1_fmnist.md ("FLAME under its script's defaults"): the main grid's
summary.csv with its FLAME runs replaced by those of configs/fedward_table1_fmnist_flame_script.yaml, so
the combined counts can be checked from the committed files without rerunning either sweep.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

from fedshield.report.table import ranking_check, table_layout
from fedshield.sweep import load_sweep


def read_cells(grid_file: str | Path, summaries: list[str | Path], metric: str = "aasr") -> dict[str, Any]:
    """The table dict :func:`fedshield.report.table.ranking_check` takes, built from summary CSVs; a later
    file's run replaces an earlier one's with the same table labels."""
    spec = load_sweep(grid_file)
    layout = spec.table
    if "compare" not in layout:
        raise SystemExit(f"{grid_file}: its table has no 'compare' section; there is nothing to rank")
    rows_k, cols_k, ref_keys, ref = table_layout({"table": layout, "grid": spec.grid, "reference": spec.reference})
    keys = rows_k + cols_k
    runs: dict[tuple[str, ...], float] = {}
    for path in summaries:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [k for k in keys + [metric] if k not in (reader.fieldnames or [])]
            if missing:
                raise SystemExit(f"{path}: no column(s) {missing}; is it a summary.csv of a sweep of {grid_file}?")
            for r in reader:
                value = r[metric].strip()
                runs[tuple(r[k] for k in keys)] = 100.0 * float(value) if value else math.nan
    cells = {}
    for labels, mine in runs.items():
        paper = ref.get((tuple(labels[keys.index(k)] for k in ref_keys), metric), math.nan)
        cells[(labels[: len(rows_k)], labels[len(rows_k):], metric)] = (mine, paper)
    return {"rows_keys": rows_k, "cols_keys": cols_k, "cells": cells,
            "compare": {**layout["compare"], "metric": metric}}


def _counts(rc: dict[str, Any]) -> str:
    near = "–" if rc["near"] is None else f"{rc['near']} of {rc['near_of']}"
    return (f"pairs {rc['pairs_ours']} of {rc['pairs']} (paper {rc['pairs_paper']}); settings {rc['ours']} of "
            f"{rc['settings']} (paper {rc['paper']}); within {rc['within']:g} points or lower: {near}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid_file")
    ap.add_argument("summaries", nargs="+")
    ap.add_argument("--metric", default="aasr")
    args = ap.parse_args(argv)
    t = read_cells(args.grid_file, args.summaries, args.metric)
    print("all:", _counts(ranking_check(t)))
    first = sorted({row[0] for row, _, _ in t["cells"]})
    for value in first:
        part = {k: v for k, v in t["cells"].items() if k[0][0] == value}
        print(f"{t['rows_keys'][0]} = {value}:", _counts(ranking_check({**t, "cells": part})))
    within = float(t["compare"].get("within", 5.0))
    by = (t["rows_keys"] + t["cols_keys"]).index(t["compare"].get("by", "defense.name"))
    for (row, col, _), (mine, paper) in sorted(t["cells"].items()):
        defense = (row + col)[by]
        if defense in t["compare"]["better"] and not math.isnan(paper) and not mine <= paper + within:
            print(f"not within: {' / '.join(row + col)}: ours {mine:.2f}, paper {paper:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
