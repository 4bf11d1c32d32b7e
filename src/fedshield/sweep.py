"""Sweeps: a grid over config keys, run in parallel processes, resumable, each result written atomically.

A grid file (YAML)::

    name: my_sweep
    base: configs/some_config.yaml        # a path (relative to the grid file) or an inline mapping
    grid:                                 # every combination is one run; keys are dotted config keys
      defense.name: [flame, fedward]
      data: [{partition: iid, _label: IID}, {partition: deg_niid, fraction: 0.5, _label: NIR 50}]
    labels:                               # optional display labels of scalar values
      defense.name: {flame: FLAME, fedward: Fedward}
    profiles:                             # optional named override sets: --profile fast
      fast: {rounds: 20, eval.every: 5}
    table: {rows: [defense.name], columns: [data], metrics: [aasr, final_ma]}   # for `fedshield report`
    reference: paper_table.csv            # optional, for `fedshield report`

A mapping value is merged into that config section (several keys that vary together); its ``_label`` names
it. Every grid point's config is validated before anything runs; a bad point (a misspelt defense, ``lam: -5``)
fails the sweep with a list of every bad point. The sweep folder holds ``sweep.json`` (the expanded runs) and
``runs/<id>/`` (one run folder each, see :mod:`fedshield.sim.loop`); :mod:`fedshield.report` reads it
(``summary.csv``, the time breakdown, tables). A run whose ``summary.json`` exists is never run again; an
interrupted run continues from its checkpoint. The grid may change between sittings (points added or
removed); the base config and the profile may not.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

import torch

from .config import ConfigError, apply_overrides, config_from_dict, set_key
from .sim import build_setup, run_experiment
from .sim.output import atomic_write_text, write_json
from .sim.pretrain import pretrain_shaping, pretrained_params

__all__ = ["SweepSpec", "SweepRun", "load_sweep", "expand", "run_sweep", "sweep_status"]

LABEL_KEY = "_label"


@dataclass
class SweepRun:
    """One point of the grid."""

    run_id: str
    overrides: dict[str, Any]  # dotted key -> value (mappings merged into sections)
    labels: dict[str, str]  # dotted key -> display label
    config: dict[str, Any]  # the full config dict of this run


@dataclass
class SweepSpec:
    name: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    table: dict[str, Any] = field(default_factory=dict)
    reference: Optional[Path] = None
    path: Optional[Path] = None


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a grid file (every run's config is validated before anything runs)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"grid file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"name", "base", "grid", "labels", "profiles", "table", "reference"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: name, base, grid, labels, profiles, table, reference")
    base = data.get("base", {})
    if isinstance(base, str):
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.exists():
            base_path = Path(base)
        if not base_path.exists():
            raise ConfigError(f"{path}: base config not found: {base}")
        base = yaml.safe_load(base_path.read_text()) or {}
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{path}: 'grid' must map dotted config keys to non-empty lists of values")
    ref = data.get("reference")
    spec = SweepSpec(
        name=str(data.get("name") or path.stem),
        base=base,
        grid=grid,
        labels={k: {str(a): str(b) for a, b in v.items()} for k, v in (data.get("labels") or {}).items()},
        profiles=data.get("profiles") or {},
        table=data.get("table") or {},
        reference=(path.parent / ref) if ref else None,
        path=path,
    )
    for key in spec.labels:
        if key not in spec.grid:
            raise ConfigError(f"{path}: labels given for {key!r}, which is not a grid key")
    return spec


def _value_label(spec: SweepSpec, key: str, value: Any) -> str:
    if isinstance(value, dict):
        if LABEL_KEY in value:
            return str(value[LABEL_KEY])
        return ",".join(f"{k}={v}" for k, v in value.items())
    return spec.labels.get(key, {}).get(str(value), str(value))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-")


def expand(spec: SweepSpec, profile: Optional[str] = None) -> list[SweepRun]:
    """Every combination of the grid, with the profile's overrides applied; every config validated, and a
    :class:`ConfigError` naming every bad point (not just the first) when any is invalid."""
    base = copy.deepcopy(spec.base)
    if profile is not None:
        if profile not in spec.profiles:
            raise ConfigError(f"unknown profile {profile!r}; available: {sorted(spec.profiles)}")
        base = apply_overrides(base, [f"{k}={json.dumps(v)}" for k, v in spec.profiles[profile].items()])
    keys = list(spec.grid)
    runs = []
    bad: list[str] = []
    seen: set[str] = set()
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        cfg = copy.deepcopy(base)
        labels = {}
        for key, value in zip(keys, combo):
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != LABEL_KEY}
            set_key(cfg, key, value, merge_mappings=True)
            labels[key] = _value_label(spec, key, combo[keys.index(key)])
        run_id = "__".join(_slug(f"{k.split('.')[-1]}={labels[k]}") for k in keys)
        if run_id in seen:
            raise ConfigError(f"two grid points share the id {run_id!r}; give the values distinct labels")
        seen.add(run_id)
        cfg["name"] = f"{spec.name}/{run_id}"
        try:
            config_from_dict(cfg)
        except ConfigError as exc:
            bad.append(f"grid point {run_id}: {exc}")
        runs.append(SweepRun(run_id, dict(zip(keys, combo)), labels, cfg))
    if bad:
        raise ConfigError(f"{len(bad)} of {len(runs)} grid points are invalid (nothing was run):\n" + "\n".join(bad))
    return runs


# ------------------------------------------------------------------------------------------------ running


def _run_one(run_dir: str, config: dict[str, Any], threads: int) -> dict[str, Any]:
    """Worker: one run in a worker process (single-threaded when several run side by side). Workers are
    reused between runs; a run depends on nothing a previous run left behind (every stream is seeded)."""
    if threads:
        torch.set_num_threads(threads)
    cfg = config_from_dict(config)
    return run_experiment(cfg, run_dir, resume=True, progress=False, log=lambda _m: None)


def _pretrain_one(config: dict[str, Any], threads: int) -> str:
    """Worker: compute (or find) the cached warm-start model of one run's config."""
    if threads:
        torch.set_num_threads(threads)
    _, key = pretrained_params(build_setup(config_from_dict(config)), log=lambda _m: None)
    return key


def _worker_config(config: dict[str, Any], jobs: int) -> dict[str, Any]:
    """A copy of ``config`` for a worker process: with several jobs side by side, one training thread each
    (results are identical, see ParallelTrainer)."""
    cfg = copy.deepcopy(config)
    if jobs > 1:
        cfg["workers"] = 1
    return cfg


def _pretrain_groups(runs: list[SweepRun]) -> list[dict[str, Any]]:
    """One config per distinct warm start among ``runs`` (those with ``pretrain.rounds`` > 0)."""
    groups: dict[str, dict[str, Any]] = {}
    for r in runs:
        cfg = config_from_dict(r.config)
        if cfg.pretrain.rounds:
            groups.setdefault(json.dumps(pretrain_shaping(cfg), sort_keys=True), r.config)
    return list(groups.values())


def sweep_status(sweep_dir: Path, runs: list[SweepRun]) -> tuple[list[SweepRun], list[SweepRun]]:
    """(finished, missing) runs of a sweep folder."""
    done = [r for r in runs if (sweep_dir / "runs" / r.run_id / "summary.json").exists()]
    missing = [r for r in runs if not (sweep_dir / "runs" / r.run_id / "summary.json").exists()]
    return done, missing


def _fmt_eta(seconds: float) -> str:
    if math.isnan(seconds) or seconds < 0:
        return "?"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m" if seconds >= 3600 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def run_sweep(
    spec: SweepSpec,
    sweep_dir: str | Path,
    jobs: int = 1,
    profile: Optional[str] = None,
    log: Callable[[str], None] = print,
    max_runs: Optional[int] = None,
) -> dict[str, Any]:
    """Run every missing grid point (at most ``max_runs`` of them this sitting, in grid order); returns counts.
    Raises nothing for a failed run: its error is written to ``runs/<id>/error.txt`` and counted. The results
    table and time breakdown are :func:`fedshield.report.summarize_sweep`'s."""
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} is invalid; run at least one job at a time")
    sweep_dir = Path(sweep_dir)
    runs = expand(spec, profile)
    base_key = json.dumps(spec.base, sort_keys=True)
    index = {
        "name": spec.name,
        "base": spec.base,
        "grid_file": str(spec.path) if spec.path else None,
        "profile": profile,
        "profile_overrides": spec.profiles.get(profile) if profile else None,
        "grid": spec.grid,
        "labels": spec.labels,
        "table": spec.table,
        "reference": str(spec.reference) if spec.reference else None,
        "runs": [{"id": r.run_id, "labels": r.labels, "overrides": r.overrides} for r in runs],
    }
    old = sweep_dir / "sweep.json"
    if old.exists():  # the grid may grow or shrink; finished runs of unchanged points are kept
        prev = json.loads(old.read_text())
        same_profile = prev.get("profile") == profile and json.dumps(prev.get("profile_overrides"), sort_keys=True) == json.dumps(index["profile_overrides"], sort_keys=True)
        if not same_profile or json.dumps(prev.get("base"), sort_keys=True) != base_key:
            raise ConfigError(f"{sweep_dir} holds a sweep with another base config or profile; use another folder")
    write_json(sweep_dir / "sweep.json", index)
    done, missing = sweep_status(sweep_dir, runs)
    if max_runs is not None:
        missing = missing[:max_runs]
    log(f"sweep {spec.name}: {len(runs)} runs, {len(done)} already finished, {len(missing)} to run, {jobs} at a time")
    threads = 1 if jobs > 1 else 0
    failed: list[str] = []
    durations: list[float] = []
    t_start = time.perf_counter()
    if missing:
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            pending: dict[Future, tuple[SweepRun, float]] = {}
            queue = list(missing)

            def submit() -> None:
                while queue and len(pending) < jobs:
                    r = queue.pop(0)
                    cfg = _worker_config(r.config, jobs)
                    run_dir = sweep_dir / "runs" / r.run_id
                    (run_dir / "error.txt").unlink(missing_ok=True)
                    pending[pool.submit(_run_one, str(run_dir), cfg, threads)] = (r, time.perf_counter())

            # warm starts first, all side by side: otherwise the first runs of each group would queue on its lock
            groups = _pretrain_groups(missing)
            if groups:
                t_pre = time.perf_counter()
                futs = []
                for config in groups:
                    futs.append(pool.submit(_pretrain_one, _worker_config(config, jobs), threads))
                for fut in futs:
                    fut.result()
                log(f"warm starts: {len(groups)} pretrained models ready in {_fmt_eta(time.perf_counter() - t_pre)}")
            submit()
            finished = len(done)
            while pending:
                complete, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in complete:
                    r, t0 = pending.pop(fut)
                    dt = time.perf_counter() - t0
                    finished += 1
                    try:
                        s = fut.result()
                        durations.append(dt)
                        what = f"AASR {s['aasr']:.3f}  MA {s['final_ma']:.3f}" if not math.isnan(s["aasr"]) else f"MA {s['final_ma']:.3f}"
                    except Exception as exc:  # noqa: BLE001 - a failed run must not stop the sweep
                        failed.append(r.run_id)
                        atomic_write_text(sweep_dir / "runs" / r.run_id / "error.txt", f"{type(exc).__name__}: {exc}\n")
                        what = f"FAILED: {type(exc).__name__}: {exc}"
                    left = len(queue)
                    eta = (sum(durations) / len(durations)) * (left + len(pending)) / jobs if durations else math.nan
                    log(f"[{finished}/{len(runs)} done, {len(pending) + min(left, jobs - len(pending))} running, "
                        f"{left} left, ETA {_fmt_eta(eta)}] {r.run_id} ({dt:.0f} s): {what}")
                submit()
    wall = time.perf_counter() - t_start
    log(f"sweep wall time this sitting: {_fmt_eta(wall)}; failed runs: {len(failed)}")
    return {"runs": len(runs), "ran": len(missing), "failed": failed, "wall_s": wall}
