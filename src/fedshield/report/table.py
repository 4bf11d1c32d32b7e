"""Tables of a finished sweep in a paper's layout, with the paper's numbers beside ours.

Layout (from the grid file's ``table`` section)::

    table:
      rows: [attack.poison_per_batch, defense.name]     # grid keys whose labels make the row headers
      columns: [data]                                   # grid keys whose labels make the column groups
      metrics: [aasr, final_ma]                         # summary.json keys, shown in percent
      compare: {metric: aasr, better: [FLAME, Fedward], than: [Median, Trimmed-Mean, CRFL, FedCC], by: defense.name}

Reference table (CSV, long format, values in percent): one column per row/column key (holding labels),
then ``metric`` and ``value``. Example row: ``15.625,Median,IID,aasr,34.88``. Lines starting with ``#`` are
comments.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from pathlib import Path
from typing import Any, Optional

from ..sim.output import read_json
from .results import read_sweep_index

__all__ = ["load_reference", "table_layout", "build_table", "render_markdown", "render_csv", "differences", "ranking_check"]

METRIC_NAMES = {
    "aasr": "AASR",
    "final_ma": "MA",
    "final_ba": "BA",
    "malicious_accepted_share": "malicious accepted",
    "benign_accepted_share": "benign accepted",
    "post_training.ma_before": "MA before FLAIN",
    "post_training.ma_after": "MA after FLAIN",
    "post_training.ba_before": "BA before FLAIN",
    "post_training.ba_after": "BA after FLAIN",
}


def summary_value(summary: dict[str, Any], metric: str) -> Any:
    """``summary[metric]``; a dotted metric reaches into a nested dict (``post_training.ba_after``)."""
    if metric in summary:
        return summary[metric]
    node: Any = summary
    for part in metric.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def load_reference(path: str | Path, keys: list[str]) -> dict[tuple[tuple[str, ...], str], float]:
    """{(labels in ``keys`` order, metric): value} from a long-format CSV."""
    out: dict[tuple[tuple[str, ...], str], float] = {}
    if not Path(path).is_file():
        raise ValueError(f"reference table not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(line for line in f if not line.lstrip().startswith("#"))
            missing = [k for k in [*keys, "metric", "value"] if k not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: reference CSV lacks column(s) {missing}; it has {reader.fieldnames}")
            for i, row in enumerate(reader, start=2):
                cells = [row.get(k) for k in [*keys, "metric", "value"]]
                value = _finite_float(row["value"])
                if any(c is None for c in cells) or value is None:
                    raise ValueError(f"{path}: data row {i}: needs {len(keys) + 2} cells and a finite number in "
                                     f"'value', got {dict(row)}")
                out[(tuple(row[k].strip() for k in keys), row["metric"].strip())] = value
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the reference table is not a text (UTF-8) CSV file") from None
    return out


def _finite_float(text: Any) -> Optional[float]:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _ordered_labels(index: dict[str, Any], key: str) -> list[str]:
    seen: dict[str, None] = {}
    for r in index["runs"]:
        seen.setdefault(r["labels"][key], None)
    return list(seen)


def table_layout(index: dict[str, Any], reference: Optional[str | Path] = None) -> tuple[
        list[str], list[str], list[str], dict[tuple[tuple[str, ...], str], float]]:
    """The table's row keys, column keys, reference keys and reference values of a sweep index (its ``table``
    section; the reference from ``reference`` or the grid file's), checked against the grid keys."""
    layout = index.get("table") or {}
    grid_keys = list(index["grid"])
    rows_k = layout["rows"] if "rows" in layout else grid_keys[:-1]
    cols_k = layout["columns"] if "columns" in layout else grid_keys[-1:]
    bad = [k for k in rows_k + cols_k if k not in grid_keys]
    if bad:
        raise ValueError(f"table keys {bad} are not grid keys {grid_keys}")
    keys = rows_k + cols_k
    # reference_keys: the table keys the reference is indexed by (default all). A key left out (e.g. ``seed``)
    # means one paper value stands beside every value of that key.
    ref_keys = layout.get("reference_keys") or keys
    bad = [k for k in ref_keys if k not in keys]
    if bad:
        raise ValueError(f"table reference_keys {bad} are not table rows or columns {keys}")
    ref_path = reference or index.get("reference")
    return rows_k, cols_k, ref_keys, (load_reference(ref_path, ref_keys) if ref_path else {})


def build_table(sweep_dir: str | Path, reference: Optional[str | Path] = None) -> dict[str, Any]:
    """The table as data: row/column label tuples and cells {(row, col, metric): (ours %, paper % or NaN)}."""
    sweep_dir = Path(sweep_dir)
    index = read_sweep_index(sweep_dir)
    layout = index.get("table") or {}
    metrics = layout.get("metrics") or ["aasr", "final_ma"]
    rows_k, cols_k, ref_keys, ref = table_layout(index, reference)
    keys = rows_k + cols_k
    ref_pos = [keys.index(k) for k in ref_keys]
    ours: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in index["runs"]:
        p = sweep_dir / "runs" / r["id"] / "summary.json"
        if p.exists():
            summary = read_json(p, "run summary")
            if not isinstance(summary, dict) or any(k not in r["labels"] for k in keys):
                raise ValueError(f"{p}: damaged run summary or sweep.json labels; delete it to rerun that run")
            ours[tuple(r["labels"][k] for k in keys)] = summary
    rows = list(itertools.product(*(_ordered_labels(index, k) for k in rows_k)))
    cols = list(itertools.product(*(_ordered_labels(index, k) for k in cols_k)))
    cells = {}
    for row in rows:
        for col in cols:
            s = ours.get(row + col)
            for m in metrics:
                v = summary_value(s, m) if s else None
                mine = math.nan if v is None else 100.0 * float(v)
                labels = row + col
                cells[(row, col, m)] = (mine, ref.get((tuple(labels[i] for i in ref_pos), m), math.nan))
    return {
        "rows_keys": rows_k, "cols_keys": cols_k, "metrics": metrics, "rows": rows, "cols": cols,
        "cells": cells, "has_reference": bool(ref), "compare": layout.get("compare"), "finished": len(ours),
        "total": len(index["runs"]),
    }


def _f(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.2f}"


def _cell(mine: float, paper: float, with_ref: bool) -> str:
    if not with_ref:
        return _f(mine)
    if math.isnan(paper) or math.isnan(mine):
        return f"{_f(mine)} ({_f(paper)})"
    return f"{_f(mine)} ({_f(paper)}, {mine - paper:+.1f})"


def render_markdown(t: dict[str, Any]) -> str:
    """Markdown: one row per row-label tuple; per column group one column per metric."""
    head = [*(k for k in t["rows_keys"])]
    for col in t["cols"]:
        for m in t["metrics"]:
            head.append(f"{' / '.join(col)} {METRIC_NAMES.get(m, m)}".strip())
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    prev: tuple[str, ...] = ()
    for row in t["rows"]:
        shown = [lab if i >= len(prev) or prev[: i + 1] != row[: i + 1] else "" for i, lab in enumerate(row)]
        prev = row
        cells = [_cell(*t["cells"][(row, col, m)], t["has_reference"]) for col in t["cols"] for m in t["metrics"]]
        lines.append("| " + " | ".join([*shown, *cells]) + " |")
    note = "Values in %." + (" Each cell: ours (paper, ours − paper)." if t["has_reference"] else "")
    return "\n".join(lines) + f"\n\n{note} {t['finished']} of {t['total']} runs finished.\n"


def render_csv(t: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*t["rows_keys"], *t["cols_keys"], "metric", "ours", "paper", "difference"])
    for (row, col, m), (mine, paper) in t["cells"].items():
        diff = mine - paper if not (math.isnan(mine) or math.isnan(paper)) else math.nan
        w.writerow([*row, *col, m, *("" if math.isnan(v) else round(v, 2) for v in (mine, paper, diff))])
    return buf.getvalue()


def differences(t: dict[str, Any], threshold: float = 10.0) -> list[tuple[tuple[str, ...], tuple[str, ...], str, float, float]]:
    """Cells where |ours − paper| > ``threshold`` points."""
    out = []
    for (row, col, m), (mine, paper) in t["cells"].items():
        if not (math.isnan(mine) or math.isnan(paper)) and abs(mine - paper) > threshold:
            out.append((row, col, m, mine, paper))
    return out


def ranking_check(t: dict[str, Any]) -> Optional[dict[str, Any]]:
    """For ``table.compare``: in how many settings is every 'better' defense below every 'than' defense, in
    how many (setting, better, than) pairs is the 'better' one below (``pairs_ours``/``pairs_paper`` of
    ``pairs``; a comparison with a paper NaN counts as not holding; a setting with an unfinished run of ours is
    left out of every count), and in how many of the 'better' defenses' cells
    with a paper value is ours at most ``compare.within`` (default 5) points above the paper's (``near`` of
    ``near_of``; ``near`` is None without paper values)?"""
    cmp = t.get("compare")
    if not cmp:
        return None
    by = cmp.get("by", "defense.name")
    keys = t["rows_keys"] + t["cols_keys"]
    if by not in keys:
        raise ValueError(f"compare.by={by!r} is not a table key")
    pos = keys.index(by)
    metric = cmp.get("metric", "aasr")
    settings: dict[tuple[str, ...], dict[str, tuple[float, float]]] = {}
    for (row, col, m), vals in t["cells"].items():
        if m != metric:
            continue
        labels = row + col
        setting = labels[:pos] + labels[pos + 1 :]
        settings.setdefault(setting, {})[labels[pos]] = vals
    within = float(cmp.get("within", 5.0))
    # a setting with an unfinished run among the compared defenses is left out
    settings = {s: vals for s, vals in settings.items()
                if not any(math.isnan(v[0]) for d, v in vals.items() if d in cmp["better"] or d in cmp["than"])}
    result = {"settings": len(settings), "ours": 0, "paper": 0, "disagree": [],
              "pairs": 0, "pairs_ours": 0, "pairs_paper": 0, "within": within, "near": None, "near_of": 0}
    for setting, vals in settings.items():
        for b in cmp["better"]:
            if b in vals and not any(math.isnan(v) for v in vals[b]):  # a 'better' cell with ours and the paper's
                result["near_of"] += 1
                result["near"] = (result["near"] or 0) + bool(vals[b][0] <= vals[b][1] + within)
        for b in cmp["better"]:
            for o in cmp["than"]:
                if b in vals and o in vals:
                    result["pairs"] += 1
                    result["pairs_ours"] += bool(vals[b][0] < vals[o][0])
                    result["pairs_paper"] += bool(vals[b][1] < vals[o][1])
        def holds(i: int) -> Optional[bool]:
            better = [vals[b][i] for b in cmp["better"] if b in vals]
            than = [vals[o][i] for o in cmp["than"] if o in vals]
            if not better or not than or any(math.isnan(v) for v in better + than):
                return None
            return max(better) < min(than)

        o, p = holds(0), holds(1)
        result["ours"] += bool(o)
        result["paper"] += bool(p)
        if o is not None and p is not None and o != p:
            result["disagree"].append(setting)
    return result
