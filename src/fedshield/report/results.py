"""A sweep folder's results: one record per finished run, the summary CSV and the time breakdown."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from ..sim.output import atomic_write_text

__all__ = ["SUMMARY_COLUMNS", "collect_results", "write_summary_csv", "time_breakdown", "format_breakdown",
           "summarize_sweep"]



def collect_results(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One dict per finished run: its labels and its summary."""
    sweep_dir = Path(sweep_dir)
    index = json.loads((sweep_dir / "sweep.json").read_text())
    out = []
    for r in index["runs"]:
        p = sweep_dir / "runs" / r["id"] / "summary.json"
        if p.exists():
            s = json.loads(p.read_text())
            out.append({"id": r["id"], "labels": r["labels"], **{k: (math.nan if v is None else v) for k, v in s.items()}})
    return out


SUMMARY_COLUMNS = ["final_ma", "final_ba", "aasr", "malicious_accepted_share", "benign_accepted_share",
                   "rounds_done", "seconds", "train_s", "aggregate_s", "eval_s"]


def write_summary_csv(sweep_dir: Path, results: list[dict[str, Any]]) -> None:
    keys = sorted({k for r in results for k in r["labels"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", *keys, *SUMMARY_COLUMNS])
    for r in results:
        w.writerow([r["id"], *(r["labels"].get(k, "") for k in keys), *(r.get(c, "") for c in SUMMARY_COLUMNS)])
    atomic_write_text(sweep_dir / "summary.csv", buf.getvalue())


def time_breakdown(sweep_dir: Path, results: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds spent in training, aggregation and evaluation over all finished runs, and per round."""
    rounds = sum(int(r.get("rounds_done", 0)) for r in results)
    tot = {k: float(sum(r.get(k, 0.0) or 0.0 for r in results)) for k in ("train_s", "aggregate_s", "eval_s", "seconds")}
    return {**tot, "rounds": float(rounds), "runs": float(len(results))}


def format_breakdown(b: dict[str, float]) -> str:
    if not b["rounds"]:
        return "no finished runs"
    total = b["seconds"] or 1.0
    per = lambda k: 1000 * b[k] / b["rounds"]  # noqa: E731
    other = b["seconds"] - b["train_s"] - b["aggregate_s"] - b["eval_s"]
    return (
        f"time per round over {int(b['runs'])} runs / {int(b['rounds'])} rounds: "
        f"training {per('train_s'):.0f} ms ({100 * b['train_s'] / total:.0f} %), "
        f"aggregation {per('aggregate_s'):.0f} ms ({100 * b['aggregate_s'] / total:.0f} %), "
        f"evaluation {per('eval_s'):.0f} ms ({100 * b['eval_s'] / total:.0f} %), "
        f"other {1000 * other / b['rounds']:.0f} ms ({100 * other / total:.0f} %)"
    )


def summarize_sweep(sweep_dir: str | Path) -> str:
    """Write ``summary.csv`` of the finished runs and return the time breakdown as a line of text."""
    sweep_dir = Path(sweep_dir)
    results = collect_results(sweep_dir)
    write_summary_csv(sweep_dir, results)
    return format_breakdown(time_breakdown(sweep_dir, results))
