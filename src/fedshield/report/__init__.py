"""Tables and plots from finished runs and sweeps (``fedshield report SWEEP_DIR``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..sim.output import atomic_write_text, read_metrics_csv
from .attackers import format_admission, run_admission
from .plots import plot_run, plot_sweep_curves
from .results import collect_results, format_breakdown, read_sweep_index, summarize_sweep, time_breakdown, write_summary_csv
from .seeds import render_seed_spread, seed_spread
from .table import build_table, differences, ranking_check, render_csv, render_markdown

__all__ = ["write_report", "admitted_attackers_section", "plot_run", "build_table", "collect_results", "summarize_sweep"]


def admitted_attackers_section(sweep_dir: Path, results: list[dict]) -> list[str]:
    """Markdown lines: for each finished run (``results``: :func:`.results.collect_results`) of a filtering
    defense (it rejected some update) that admitted an attacker's update at least once, which attackers (id,
    dataset size) and in how many of their rounds (:func:`.attackers.run_admission`). Defenses that admit
    everyone (Median, Trimmed-Mean, ...) are left out."""
    lines = []
    for r in results:
        if not (r.get("tp") or r.get("fp")):
            continue
        recs = run_admission(sweep_dir / "runs" / r["id"], summary=r)
        if any(a["admitted"] for a in recs):
            lines.append(f"| {' / '.join(str(v) for v in r['labels'].values())} | {format_admission(recs)} |")
    if not lines:
        return []
    return ["## Admitted attackers", "",
            "Runs of a filtering defense that let an attacker's update in: per attacker, id (local dataset size): "
            "rounds admitted / rounds attacked.", "", "| run | attackers |", "|---|---|", *lines, ""]


def write_report(
    sweep_dir: str | Path,
    reference: Optional[str | Path] = None,
    threshold: float = 10.0,
    seeds: Sequence[str | Path] = (),
) -> dict[str, Path]:
    """Write ``report.md``, ``table.csv``, ``summary.csv``, ``ba_per_round.png`` and ``ma_per_round.png`` into
    the sweep folder. ``summary.csv`` is rewritten from the runs' ``summary.json`` files, so runs finished by a
    later or partial sweep into the same folder are in it as they are in the report.
    ``seeds``: sweep folders that ran some of its cells at other seeds; the report then shows each such cell's
    AASR and admitted share across seeds (:func:`.seeds.seed_spread`)."""
    sweep_dir = Path(sweep_dir)
    index = read_sweep_index(sweep_dir)
    t = build_table(sweep_dir, reference)
    md = [f"# {index['name']}" + (f" (profile: {index['profile']})" if index.get("profile") else ""), "", render_markdown(t)]
    if t["has_reference"]:
        diffs = differences(t, threshold)
        md += [f"## Cells that differ from the paper by more than {threshold:g} points ({len(diffs)})", ""]
        md += [f"- {' / '.join(row + col)} {metric}: ours {mine:.2f}, paper {paper:.2f} ({mine - paper:+.1f})"
               for row, col, metric, mine, paper in diffs] or ["none"]
        md.append("")
    rc = ranking_check(t)
    if rc:
        cmp = t["compare"]
        partial = " Only settings whose runs have all finished are counted." if t["finished"] < t["total"] else ""
        md += ["## Ranking", "",
               f"Settings where {' and '.join(cmp['better'])} both have lower {cmp.get('metric', 'aasr').upper()} than "
               f"{', '.join(cmp['than'])}: ours {rc['ours']} of {rc['settings']}"
               + (f", paper {rc['paper']} of {rc['settings']}" if t["has_reference"] else "") + "." + partial,
               "",
               f"Pairs (setting, one of {', '.join(cmp['better'])}, one of {', '.join(cmp['than'])}) where the first has "
               f"the lower {cmp.get('metric', 'aasr').upper()}: ours {rc['pairs_ours']} of {rc['pairs']}"
               + (f", paper {rc['pairs_paper']} of {rc['pairs']}" if t["has_reference"] else "") + "."]
        if rc["disagree"]:
            md.append("Settings where ours and the paper disagree on the first of these: "
                      + "; ".join(" / ".join(s) for s in rc["disagree"]) + ".")
        if rc.get("near") is not None:
            md += ["", f"{', '.join(cmp['better'])} cells whose {cmp.get('metric', 'aasr').upper()} is within "
                   f"{rc['within']:g} points of the paper's or lower: {rc['near']} of {rc['near_of']}."]
        md.append("")
    if seeds:
        for metric in ("aasr", "malicious_accepted_share"):
            md += render_seed_spread(seed_spread(sweep_dir, list(seeds), metric, reference))
    results = collect_results(sweep_dir)
    md += admitted_attackers_section(sweep_dir, results)
    md += ["## Time", "", format_breakdown(time_breakdown(sweep_dir, results)), ""]
    line_key = (t["compare"] or {}).get("by", "defense")
    runs = []
    for r in index["runs"]:
        p = sweep_dir / "runs" / r["id"] / "metrics.csv"
        if p.exists():
            runs.append({"labels": r["labels"], "rows": read_metrics_csv(p)})
    paths = {"report": sweep_dir / "report.md", "table": sweep_dir / "table.csv", "summary": sweep_dir / "summary.csv"}
    if runs and line_key in runs[0]["labels"]:
        for metric in ("ba", "ma"):
            paths[metric] = sweep_dir / f"{metric}_per_round.png"
            plot_sweep_curves(runs, line_key, metric, paths[metric], f"{metric.upper()} per round")
        md += ["## Curves", "", "![BA per round](ba_per_round.png)", "", "![MA per round](ma_per_round.png)", ""]
    atomic_write_text(paths["report"], "\n".join(md))
    atomic_write_text(paths["table"], render_csv(t))
    write_summary_csv(sweep_dir, results)
    return paths
