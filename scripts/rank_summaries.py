"""A report's ranking counts recomputed from committed ``summary.csv`` files, with cells of one sweep replaced
by another's.

    python scripts/rank_summaries.py GRID_FILE SUMMARY_CSV [SUMMARY_CSV ...] [--metric aasr] [--table]

Reads the grid file's ``table`` (rows, columns, ``compare``) and ``reference``, takes every run of the summary
files (the ``summary.csv`` that ``fedshield report`` writes: one row per run, a column per grid key holding
its label; a run whose labels are not a point of the grid's table is refused), a later file's run replacing
an earlier file's run with the same labels, and prints what the
report's Ranking section prints: the (setting, better, than) pairs where the 'better' defense has the lower
metric, the settings where every 'better' defense is below every 'than' defense, the 'better' cells within
``compare.within`` points of the paper's value or lower (ours and the paper's), overall and per value of the
first row key, then every 'better' cell that is not within. ``--table`` first prints the combined table as
``fedshield report`` renders it (the grid file's table metrics, ours beside the paper's).

Used for docs/results/fedward_table1_fmnist.md ("FLAME under its script's defaults"): the main grid's
summary.csv with its FLAME runs replaced by those of configs/fedward_table1_fmnist_flame_script.yaml, so
the combined counts can be checked from the committed files without rerunning either sweep.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import sys
from pathlib import Path
from typing import Any

from fedshield.report.table import ranking_check, render_markdown, table_layout
from fedshield.sweep import SweepSpec, expand, load_sweep


def read_table(spec: SweepSpec, summaries: list[str | Path], metrics: list[str]) -> dict[str, Any]:
    """The table dict of :func:`fedshield.report.table.build_table` (rows and columns in grid order, cells
    ``{(row, col, metric): (ours %, paper %)}``, ``compare`` from the grid file), built from summary CSVs; a
    later file's run replaces an earlier one's with the same table labels. A cell no summary holds is NaN, so
    :func:`~fedshield.report.table.ranking_check` leaves its setting out, as in an unfinished sweep's report."""
    rows_k, cols_k, ref_keys, ref = table_layout({"table": spec.table, "grid": spec.grid, "reference": spec.reference})
    keys = rows_k + cols_k
    runs: dict[tuple[str, ...], dict[str, float]] = {}
    for path in summaries:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [k for k in keys + metrics if k not in (reader.fieldnames or [])]
            if missing:
                raise SystemExit(f"{path}: no column(s) {missing}; is it a summary.csv of a sweep of {spec.path}?")
            for r in reader:
                runs[tuple(r[k] for k in keys)] = {
                    m: 100.0 * float(r[m]) if r[m].strip() else math.nan for m in metrics}
    grid_runs = expand(spec)
    order = {k: list(dict.fromkeys(run.labels[k] for run in grid_runs)) for k in keys}
    rows = list(itertools.product(*(order[k] for k in rows_k)))
    cols = list(itertools.product(*(order[k] for k in cols_k)))
    strangers = sorted(set(runs) - {r + c for r in rows for c in cols})
    if strangers:
        raise SystemExit(f"runs whose labels are not a point of {spec.path}'s table ({', '.join(keys)}): "
                         + "; ".join(" / ".join(labels) for labels in strangers))
    cells = {}
    for row in rows:
        for col in cols:
            labels = row + col
            ours = runs.get(labels, {})
            for m in metrics:
                paper = ref.get((tuple(labels[keys.index(k)] for k in ref_keys), m), math.nan)
                cells[(row, col, m)] = (ours.get(m, math.nan), paper)
    return {"rows_keys": rows_k, "cols_keys": cols_k, "metrics": metrics, "rows": rows, "cols": cols,
            "cells": cells, "has_reference": bool(ref), "compare": spec.table.get("compare"),
            "finished": len(runs), "total": len(rows) * len(cols)}


def _counts(rc: dict[str, Any]) -> str:
    near = "–" if rc["near"] is None else f"{rc['near']} of {rc['near_of']}"
    return (f"pairs {rc['pairs_ours']} of {rc['pairs']} (paper {rc['pairs_paper']}); settings {rc['ours']} of "
            f"{rc['settings']} (paper {rc['paper']}); within {rc['within']:g} points or lower: {near}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid_file")
    ap.add_argument("summaries", nargs="+")
    ap.add_argument("--metric", default="aasr")
    ap.add_argument("--table", action="store_true", help="print the combined table first (Markdown)")
    args = ap.parse_args(argv)
    spec = load_sweep(args.grid_file)
    if "compare" not in spec.table:
        raise SystemExit(f"{args.grid_file}: its table has no 'compare' section; there is nothing to rank")
    metrics = [args.metric]
    if args.table:  # the table's metrics, and the compared one for the counts
        metrics = list(dict.fromkeys([*(spec.table.get("metrics") or []), args.metric]))
    full = read_table(spec, args.summaries, metrics)
    if args.table:
        print(render_markdown({**full, "metrics": list(spec.table.get("metrics") or [args.metric])}))
    # the counts and the cell list look at the compared metric only
    t = {**full, "cells": {k: v for k, v in full["cells"].items() if k[2] == args.metric},
         "compare": {**spec.table["compare"], "metric": args.metric}}
    print("all:", _counts(ranking_check(t)))
    first = sorted({row[0] for row, _, _ in t["cells"]})
    for value in first:
        part = {k: v for k, v in t["cells"].items() if k[0][0] == value}
        print(f"{t['rows_keys'][0]} = {value}:", _counts(ranking_check({**t, "cells": part})))
    within = float(t["compare"].get("within", 5.0))
    by = (t["rows_keys"] + t["cols_keys"]).index(t["compare"].get("by", "defense.name"))
    for (row, col, _), (mine, paper) in sorted(t["cells"].items()):
        defense = (row + col)[by]
        if defense in t["compare"]["better"] and not math.isnan(paper) and mine > paper + within:
            print(f"not within: {' / '.join(row + col)}: ours {mine:.2f}, paper {paper:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
