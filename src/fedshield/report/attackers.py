"""Which attackers a filtering defense admitted, per run: the report's "Admitted attackers" section.

A run records, per round, the ids of the attacking clients (``malicious_clients``) and of the clients the
defense left out (``rejected_clients``); ``summary.json`` holds the per-attacker totals with each attacker's
dataset size (``attackers``, :func:`fedshield.metrics.attacker_admission`). For runs written before those
existed, :func:`run_admission` rebuilds what it can: the round's attackers from the seeded client selection
(:func:`fedshield.sim.loop.select_clients`, deterministic in (seed, round)) and the dataset sizes from the
seeded partition; a run whose metrics lack ``rejected_clients`` gives nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from ..config import load_config, load_yaml_text
from ..sim.loop import admission_from_rows, select_clients
from ..sim.output import read_json, read_metrics_csv
from ..sim.setup import build_setup

__all__ = ["run_admission", "format_admission"]


_SIZES: dict[str, dict[int, int]] = {}


def _attacker_sizes(run_dir: Path) -> dict[int, int]:
    """{attacker id: local dataset size} of the run in ``run_dir``, rebuilt from its config (builds the run's
    setup, so the dataset must be readable). Cached on what the partition depends on: a sweep's defenses share it."""
    data = load_yaml_text((run_dir / "config.yaml").read_text(encoding="utf-8"))
    key = yaml.safe_dump({k: data.get(k) for k in ("seed", "num_clients", "data", "attack", "model")}, sort_keys=True)
    if key not in _SIZES:
        setup = build_setup(load_config(run_dir / "config.yaml"))
        _SIZES[key] = {c: len(setup.client_indices[c]) for c in setup.attackers}
    return _SIZES[key]


def run_admission(run_dir: str | Path, sizes: bool = True, summary: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """Per-attacker admission of the finished run in ``run_dir`` (records as in ``summary.json``'s ``attackers``):
    from the summary (``summary``, or read from the folder) when it has them, else rebuilt from ``metrics.csv``
    and ``config.yaml`` (``sizes``: also rebuild the attackers' dataset sizes, which reads the dataset; left out
    if that fails). ``[]`` when the run's metrics do not name the rejected clients."""
    run_dir = Path(run_dir)
    if summary is None:
        summary = read_json(run_dir / "summary.json", "run summary")
    if isinstance(summary, dict) and summary.get("attackers"):
        return list(summary["attackers"])
    rows = read_metrics_csv(run_dir / "metrics.csv")
    if not rows or "rejected_clients" not in rows[0]:
        return []
    if "malicious_clients" not in rows[0]:  # older runs: the selection is a pure function of (seed, round)
        cfg = load_config(run_dir / "config.yaml")
        attackers = cfg.attack.ids() if cfg.attack.name != "none" and cfg.attack.num_attackers > 0 else []
        start = cfg.attack.start_round
        aset = set(attackers)
        for r in rows:
            t = int(r["round"])
            mal = [c for c in select_clients(cfg, attackers, t) if c in aset] if t >= start else []
            if len(mal) != int(r["malicious"]) or (r.get("dropped") or 0) > 0:
                return []  # the rebuilt selection disagrees with the run's record, or dropped ids unknown: say nothing
            r["malicious_clients"] = " ".join(map(str, mal))
    samples: Optional[dict[int, int]] = None
    if sizes:
        try:
            samples = _attacker_sizes(run_dir)
        except Exception:  # noqa: BLE001 - the dataset may not be on this machine: report without sizes
            samples = None
    return admission_from_rows(rows, samples)


def format_admission(records: list[dict[str, Any]]) -> str:
    """``id (samples): admitted/rounds`` per attacker, e.g. ``0 (386): 0/105, 3 (341): 102/105``."""
    parts = []
    for r in records:
        size = f" ({r['samples']})" if "samples" in r else ""
        parts.append(f"{r['client']}{size}: {r['admitted']}/{r['rounds']}")
    return ", ".join(parts)
