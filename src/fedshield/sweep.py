"""Sweeps: a grid over config keys, run in parallel processes or as Ray tasks, resumable, results atomic.

A grid file (YAML)::

    name: my_sweep
    base: configs/some_config.yaml        # a path (relative to the grid file) or an inline mapping
    set: {rounds: 220, train.epochs: 3}   # optional: this file's fixed changes to the base (dotted keys)
    grid:                                 # every combination is one run; keys are dotted config keys
      defense.name: [flame, fedward]
      data: [{partition: iid, _label: IID}, {partition: deg_niid, fraction: 0.5, _label: NIR 50}]
    labels:                               # optional display labels of scalar values
      defense.name: {flame: FLAME, fedward: Fedward}
    profiles:                             # optional named override sets: --profile fast
      fast: {rounds: 20, eval.every: 5}
    table: {rows: [defense.name], columns: [data], metrics: [aasr, final_ma]}   # for `fedshield report`
    # (optional in table: reference_keys, the keys the reference CSV has when it lacks some, e.g. a seed axis)
    reference: paper_table.csv            # optional, for `fedshield report`

A mapping value is merged into that config section (several keys that vary together); its ``_label`` names
it. Every grid point's config is validated before anything runs; a bad point (a misspelt defense, ``lam: -5``)
fails the sweep with a list of every bad point. The sweep folder holds ``sweep.json`` (the expanded runs) and
``runs/<id>/`` (one run folder each, see :mod:`fedshield.sim.loop`); :mod:`fedshield.report` reads it
(``summary.csv``, the time breakdown, tables). A run whose ``summary.json`` exists is never run again; an
interrupted run continues from its checkpoint. The grid may change between sittings (points added or
removed); the base config and the profile may not. Runs execute on an :class:`Engine`: a local process pool
(default) or Ray (``fedshield sweep GRID --engine ray [--address ADDR]``, docs/scaling.md).
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

import torch

from .config import ConfigError, apply_overrides, config_from_dict, read_yaml_mapping, set_key
from .core.errors import OutputError
from .core.numeric import is_finite_number, is_int
from .sim import build_setup, run_experiment
from .sim.output import atomic_write_text, prepare_out_dir, read_json, write_json
from .sim.pretrain import pretrain_shaping, pretrained_params

__all__ = ["SweepSpec", "SweepRun", "Engine", "ENGINES", "load_sweep", "expand", "run_sweep", "sweep_status"]

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
    data = read_yaml_mapping(path, "grid file")
    unknown = set(data) - {"name", "base", "set", "grid", "labels", "profiles", "table", "reference"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: name, base, set, grid, labels, profiles, table, reference")
    base = data.get("base", {})
    if isinstance(base, str):
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.exists():
            base_path = Path(base)
        if not base_path.exists():
            raise ConfigError(f"{path}: base config not found: {base}")
        base = read_yaml_mapping(base_path, "base config")
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: 'base' must be a config file path or a mapping, got a {type(base).__name__}")
    fixed = data.get("set") or {}
    if not isinstance(fixed, dict) or not all(isinstance(k, str) and k for k in fixed):
        raise ConfigError(f"{path}: 'set' must map dotted config keys to values (fixed changes to the base)")
    for key, value in fixed.items():  # the grid file's own changes to a shared base, the same for every run
        try:
            set_key(base, key, copy.deepcopy(value))
        except ConfigError as exc:
            raise ConfigError(f"{path}: set: {exc}") from None
    grid = data.get("grid") or {}
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{path}: 'grid' must map dotted config keys to non-empty lists of values")
    _check_sections(path, data)
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


def _check_sections(path: Path, data: dict[str, Any]) -> None:
    """The shapes of a grid file's optional sections, each error naming the section."""
    bad_keys = [k for k in data["grid"] if not isinstance(k, str) or not k]
    if bad_keys:
        raise ConfigError(f"{path}: grid keys must be dotted config keys (text), got {bad_keys}")
    labels = data.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, dict) for v in labels.values()):
        raise ConfigError(f"{path}: 'labels' must map grid keys to mappings value -> label")
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise ConfigError(f"{path}: 'profiles' must map profile names to mappings of dotted config keys")
    if not isinstance(data.get("table") or {}, dict):
        raise ConfigError(f"{path}: 'table' must be a mapping (rows, columns, metrics, compare, reference_keys)")
    if data.get("reference") is not None and not isinstance(data["reference"], str):
        raise ConfigError(f"{path}: 'reference' must be a file path")


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


ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Engine:
    """Where a sweep's runs execute.

    ``local`` (default): a pool of ``jobs`` spawned processes on this machine. ``ray``: each run is a Ray task
    reserving ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (a fraction shares a GPU), on the Ray instance
    this process is already connected to, else the cluster at ``address``, else a new local instance. Ray
    workers write into the sweep folder, so on a cluster it must be a path every node sees (a shared file
    system), and every node needs fedshield and the datasets installed. Resumption, results and report are the
    same whichever engine ran a point.
    """

    name: str = "local"
    jobs: int = 1
    address: Optional[str] = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ConfigError(f"engine={self.name!r} is invalid; allowed: {', '.join(ENGINES)}")
        if not is_int(self.jobs) or self.jobs < 1:
            raise ConfigError(f"jobs={self.jobs!r} is invalid; give an integer >= 1 (runs side by side)")
        if not is_finite_number(self.cpus_per_run) or not self.cpus_per_run > 0:
            raise ConfigError(f"cpus_per_run={self.cpus_per_run!r} is invalid; give a number > 0")
        if not is_finite_number(self.gpus_per_run) or self.gpus_per_run < 0:
            raise ConfigError(f"gpus_per_run={self.gpus_per_run!r} is invalid; give a number >= 0")
        if self.name == "local" and (self.address is not None or self.gpus_per_run):
            raise ConfigError("address and gpus_per_run apply to engine 'ray' only")

    @property
    def threads(self) -> int:
        """torch intra-op threads per run (0: torch's default)."""
        if self.name == "ray":
            return max(1, int(self.cpus_per_run))
        return 1 if self.jobs > 1 else 0

    def worker_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``config`` for one worker: one training thread when runs share the machine (results are
        identical, see ParallelTrainer); on a GPU share, ``device: cuda``."""
        cfg = copy.deepcopy(config)
        if self.threads == 1:
            cfg["workers"] = 1
        if self.gpus_per_run > 0:
            cfg["device"] = "cuda"
        return cfg


class _RayPool:
    """The part of an executor the sweep uses (``submit`` returning a ``concurrent.futures.Future``), on Ray."""

    def __init__(self, engine: Engine):
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "engine 'ray' needs Ray: pip install \"torch==2.13.0\" \"fedshield[ray]\" (or ray>=2.10)"
            ) from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            try:
                ray.init(address=engine.address, include_dashboard=False, log_to_driver=False)
            except ConnectionError as exc:
                raise ConfigError(f"cannot reach the Ray cluster at {engine.address!r}: {exc}") from None
            self._started = True
        elif engine.address is not None:
            raise ConfigError("this process is already connected to Ray; leave --address out")
        cpus = float(ray.cluster_resources().get("CPU", 0))
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if engine.cpus_per_run > cpus or engine.gpus_per_run > gpus:
            if self._started:
                ray.shutdown()
            raise ConfigError(
                f"each run asks for {engine.cpus_per_run} CPUs and {engine.gpus_per_run} GPUs, but the Ray "
                f"cluster has {cpus:g} CPUs and {gpus:g} GPUs"
            )
        slots = int(cpus // engine.cpus_per_run)
        if engine.gpus_per_run:
            slots = min(slots, int(gpus // engine.gpus_per_run))
        self.slots = max(1, slots)
        self._options = {"num_cpus": engine.cpus_per_run, "num_gpus": engine.gpus_per_run, "max_retries": 0}
        self._remote: dict[Callable, Any] = {}

    def submit(self, fn: Callable, *args: Any) -> Future:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(fn).options(**self._options)
        return self._remote[fn].remote(*args).future()

    def __enter__(self) -> "_RayPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._started:
            self._ray.shutdown()


def _open_pool(engine: Engine) -> Any:
    """(pool, slots): an executor for ``engine`` and how many runs it executes at once."""
    if engine.name == "ray":
        pool = _RayPool(engine)
        return pool, pool.slots
    return ProcessPoolExecutor(max_workers=engine.jobs, mp_context=get_context("spawn")), engine.jobs


def run_sweep(
    spec: SweepSpec,
    sweep_dir: str | Path,
    jobs: int = 1,
    profile: Optional[str] = None,
    log: Callable[[str], None] = print,
    max_runs: Optional[int] = None,
    engine: Optional[Engine] = None,
) -> dict[str, Any]:
    """Run every missing grid point (at most ``max_runs`` of them this sitting, in grid order); returns counts.
    Raises nothing for a failed run: its error is written to ``runs/<id>/error.txt`` and counted. ``engine``
    says where runs execute (default: the local pool with ``jobs`` processes; ``jobs`` is not read when an engine
    is given); every engine runs after the same validation of every grid point and writes the same run folders.
    The results table and time breakdown are :func:`fedshield.report.summarize_sweep`'s."""
    engine = engine or Engine("local", jobs)  # checks jobs
    if max_runs is not None and (not is_int(max_runs) or max_runs < 1):
        raise ConfigError(f"max_runs={max_runs!r} is invalid; give an integer >= 1 or leave it out")
    sweep_dir = Path(sweep_dir).absolute()
    runs = expand(spec, profile)
    prepare_out_dir(sweep_dir)
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
        prev = read_json(old, "sweep index")
        if not isinstance(prev, dict):
            raise OutputError(f"{old}: damaged sweep index (not a JSON object); delete it or use another folder")
        same_profile = prev.get("profile") == profile and json.dumps(prev.get("profile_overrides"), sort_keys=True) == json.dumps(index["profile_overrides"], sort_keys=True)
        if not same_profile or json.dumps(prev.get("base"), sort_keys=True) != base_key:
            raise ConfigError(f"{sweep_dir} holds a sweep with another base config or profile; use another folder")
    write_json(sweep_dir / "sweep.json", index)
    done, missing = sweep_status(sweep_dir, runs)
    if max_runs is not None:
        missing = missing[:max_runs]
    threads = engine.threads
    failed: list[str] = []
    durations: list[float] = []
    t_start = time.perf_counter()
    if not missing:
        log(f"sweep {spec.name}: {len(runs)} runs, {len(done)} already finished, 0 to run")
    else:
        pool, slots = _open_pool(engine)
        log(f"sweep {spec.name}: {len(runs)} runs, {len(done)} already finished, {len(missing)} to run, "
            f"{slots} at a time" + (" on Ray" if engine.name == "ray" else ""))
        with pool:
            pending: dict[Future, tuple[SweepRun, float]] = {}
            queue = list(missing)

            def submit() -> None:
                while queue and len(pending) < slots:
                    r = queue.pop(0)
                    run_dir = sweep_dir / "runs" / r.run_id
                    (run_dir / "error.txt").unlink(missing_ok=True)
                    pending[pool.submit(_run_one, str(run_dir), engine.worker_config(r.config), threads)] = (r, time.perf_counter())

            # warm starts first, all side by side: otherwise the first runs of each group would queue on its lock
            groups = _pretrain_groups(missing)
            if groups:
                t_pre = time.perf_counter()
                futs = []
                for config in groups:
                    futs.append(pool.submit(_pretrain_one, engine.worker_config(config), threads))
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
                    eta = (sum(durations) / len(durations)) * (left + len(pending)) / slots if durations else math.nan
                    log(f"[{finished}/{len(runs)} done, {len(pending) + min(left, slots - len(pending))} running, "
                        f"{left} left, ETA {_fmt_eta(eta)}] {r.run_id} ({dt:.0f} s): {what}")
                submit()
    wall = time.perf_counter() - t_start
    log(f"sweep wall time this sitting: {_fmt_eta(wall)}; failed runs: {len(failed)}")
    return {"runs": len(runs), "ran": len(missing), "failed": failed, "wall_s": wall}
