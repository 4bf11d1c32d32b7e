"""Command line: ``fedshield run | federate | demo | sweep | report | list``. A thin shell over :mod:`fedshield.sim`,
:mod:`fedshield.sweep` and :mod:`fedshield.report`. Every config is validated completely before anything trains."""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .attacks import available_attacks
from .config import apply_overrides, config_from_dict, load_config, read_yaml_mapping, set_key
from .data import DATASETS, PARTITIONS
from .defenses import POST_TRAINING, available_defenses
from .models import MODELS
from .report import summarize_sweep, write_report
from .sim import run_experiment
from .sim.output import prepare_out_dir
from .sweep import ENGINES, Engine, load_sweep, run_sweep

try:  # the optional Flower extra: without it every command but ``federate`` works
    from .flower.federate import FederateError, federate

    FLOWER_MISSING = ""
except ImportError as exc:
    FLOWER_MISSING = str(exc)

__all__ = ["main"]

DEMO_DEFENSES = ["flame", "fedward"]


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "  -  " if math.isnan(x) else f"{x:.3f}"
    return str(x)


def format_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain-text table; ``columns`` are (key, header) pairs."""
    cells = [[h for _, h in columns]] + [[_fmt(r.get(k, float("nan"))) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    out = Path(args.out) if args.out else _default_out(cfg.name)
    summary = run_experiment(cfg, out, resume=args.resume, progress=not args.quiet)
    print(f"output: {out}")
    keys = ["final_ma", "final_ba", "aasr", "malicious_accepted_share", "benign_accepted_share", "seconds"]
    print("  ".join(f"{k}={_fmt(summary[k])}" for k in keys))
    if summary.get("refused_rounds"):
        print(f"warning: {summary['refused_rounds']} round(s) refused a non-finite aggregate and kept the previous "
              f"global model; see info.refused_reason in {out / 'metrics.csv'}", file=sys.stderr)
    if "post_training" in summary:
        p = summary["post_training"]
        print(f"{p['name']}: MA {_fmt(p['ma_before'])} -> {_fmt(p['ma_after'])}, BA {_fmt(p['ba_before'])} -> {_fmt(p['ba_after'])}")
    return 0


def cmd_federate(args: argparse.Namespace) -> int:
    if FLOWER_MISSING:
        print(f"fedshield: error: {FLOWER_MISSING}", file=sys.stderr)
        return 2
    cfg = load_config(args.config, args.set)
    out = Path(args.out) if args.out else _default_out(cfg.name + "-flower")
    try:
        summary = federate(cfg, out, nodes=args.nodes, superlink_only=args.superlink_only, host=args.host,
                           port=args.port, advertise=args.advertise, log=lambda line: print(line, flush=True))
    except FederateError as exc:
        print(f"fedshield: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; every process federate started was stopped", file=sys.stderr)
        return 130
    print(f"output: {out}")
    keys = ["final_ma", "final_ba", "aasr", "malicious_accepted_share", "benign_accepted_share", "seconds"]
    print("  ".join(f"{k}={_fmt(summary[k])}" for k in keys))
    return 0


def demo_configs(base: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The demo's runs: FedAvg without attack, FedAvg under DBA (then repaired by FLAIN when it exists), and
    each registered demo defense under DBA."""
    runs: list[tuple[str, dict[str, Any]]] = [
        ("fedavg, no attack", {"attack": {"name": "none"}, "defense": {"name": "fedavg"}}),
        ("fedavg, DBA", {"defense": {"name": "fedavg"}, "post_training": {"name": "flain"}}),
    ]
    runs += [(f"{name}, DBA", {"defense": {"name": name}}) for name in DEMO_DEFENSES if name in available_defenses()]
    out = []
    for label, delta in runs:
        d = copy.deepcopy(base)
        for section, values in delta.items():
            set_key(d, section, values, merge_mappings=True)
        d["name"] = label.replace(", ", "_").replace(" ", "_").lower()
        out.append((label, d))
    return out


def cmd_demo(args: argparse.Namespace) -> int:
    base = apply_overrides(read_yaml_mapping(args.config, "demo config"), args.set)
    configs = [(label, config_from_dict(data)) for label, data in demo_configs(base)]  # all checked first
    out_root = prepare_out_dir(Path(args.out) if args.out else _default_out("demo"))
    results = []
    t0 = time.perf_counter()
    for label, cfg in configs:
        print(f"== {label}", flush=True)
        s = run_experiment(cfg, out_root / cfg.name, resume=True, progress=not args.quiet)
        results.append({"run": label, **s})
        if "post_training" in s:  # FLAIN repairs the model this run trained
            p = s["post_training"]
            results.append({"run": f"{label}, then FLAIN", "final_ma": p["ma_after"], "final_ba": p["ba_after"]})
    cols = [
        ("run", "run"),
        ("final_ma", "MA"),
        ("final_ba", "BA"),
        ("aasr", "AASR"),
        ("malicious_accepted_share", "malicious accepted"),
        ("benign_accepted_share", "benign accepted"),
        ("seconds", "seconds"),
    ]
    print()
    print(format_table(results, cols))
    print(f"\n{len(results)} rows in {time.perf_counter() - t0:.0f} s; output in {out_root}")
    return 0


LISTS = {
    "attacks": available_attacks,
    "defenses": available_defenses,
    "post_training": POST_TRAINING.items,
    "datasets": DATASETS.items,
    "partitions": PARTITIONS.items,
    "models": MODELS.items,
}
_SUMMARIES = {"post_training": POST_TRAINING, "datasets": DATASETS, "partitions": PARTITIONS, "models": MODELS}


def cmd_list(args: argparse.Namespace) -> int:
    """Every registered name of one kind (or of all kinds), with its summary and, where known, its paper."""
    for what in LISTS if args.what == "all" else [args.what]:
        if args.what == "all":
            print(f"== {what}")
        for name, entry in LISTS[what]().items():
            summary = getattr(entry, "summary", "") or _SUMMARIES[what].summary(name)
            print(f"{name:20s} {summary}")
            if getattr(entry, "paper", ""):
                print(f"{'':20s} paper: {entry.paper}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    engine = Engine(args.engine, args.jobs, args.address, args.cpus_per_run, args.gpus_per_run)
    spec = load_sweep(args.grid)
    out = Path(args.out) if args.out else Path("runs") / (spec.name + (f"-{args.profile}" if args.profile else ""))
    result = run_sweep(spec, out, profile=args.profile, max_runs=args.max_runs, engine=engine)
    print(summarize_sweep(out))
    print(f"output: {out}  (report: fedshield report {out})")
    return 1 if result["failed"] else 0


def cmd_report(args: argparse.Namespace) -> int:
    paths = write_report(args.sweep_dir, args.reference, args.threshold, seeds=args.seeds or ())
    print(Path(paths["report"]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid; give an integer >= 1")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is invalid; give a finite number")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is invalid; give a finite number >= 0")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is invalid; give a finite number > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedshield", description="Backdoor attacks and defenses in federated learning")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "run",
        help="run one experiment from a YAML config",
        description="Run one experiment in-process. Every config key, its default and allowed values: "
        "docs/config.md; commented examples: configs/. FEDSHIELD_QUICK=1 shrinks any run to a smoke test.",
    )
    r.add_argument("config", help="experiment config (YAML; keys: docs/config.md)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted)")
    r.add_argument("--out", help="output folder (default runs/NAME-TIMESTAMP)")
    r.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)

    fd = sub.add_parser(
        "federate",
        help="run one experiment as a real Flower deployment (SuperLink + SuperNodes as processes)",
        description="Run the experiment on Flower: a SuperLink and SuperNodes hosting the clients on this "
        "machine (loopback, free ports), or with --superlink-only only the SuperLink, printing the command each node "
        "runs on its machine. Writes the same run folder as `fedshield run`. See docs/flower.md.",
    )
    fd.add_argument("config", help="experiment config (YAML; keys: docs/config.md)")
    fd.add_argument("--nodes", type=int, help="SuperNodes; node i hosts the clients c with c mod N = i (default: one per client, at most 4)")
    fd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted)")
    fd.add_argument("--out", help="output folder (default runs/NAME-flower-TIMESTAMP)")
    fd.add_argument("--superlink-only", action="store_true",
                    help="start only the SuperLink and print the SuperNode command for each node's machine")
    fd.add_argument("--host", default="127.0.0.1", help="SuperLink listen address (0.0.0.0 for other machines)")
    fd.add_argument("--port", type=int, default=0, help="SuperLink port (default: a free one)")
    fd.add_argument("--advertise", help="address nodes use to reach this machine (default: its outgoing address)")
    fd.set_defaults(func=cmd_federate)

    d = sub.add_parser("demo", help="short comparison on Fashion-MNIST: FedAvg with/without DBA and the defenses")
    d.add_argument("--config", default=str(Path(__file__).with_name("demo.yaml")), help="base config of the demo")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    d.add_argument("--out", help="output folder (default runs/demo-TIMESTAMP); rerunning resumes")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    sw = sub.add_parser("sweep", help="run a grid of experiments in parallel processes (resumable)")
    sw.add_argument("grid", help="grid file (YAML): base config, grid of dotted keys, profiles, table layout")
    sw.add_argument("--jobs", type=_positive_int, default=1, help="runs side by side, one thread each (default 1)")
    sw.add_argument("--profile", help="a named set of overrides from the grid file, e.g. 'fast'")
    sw.add_argument("--out", help="sweep folder (default runs/NAME[-PROFILE]); rerunning resumes")
    sw.add_argument("--max-runs", type=_positive_int, help="run at most this many of the missing grid points this sitting")
    sw.add_argument("--engine", choices=list(ENGINES), default="local",
                    help="local: a pool of --jobs processes (default); ray: one Ray task per run (pip extra 'ray')")
    sw.add_argument("--address", help="engine ray: address of an existing Ray cluster (default: start a local one)")
    sw.add_argument("--cpus-per-run", type=_positive_float, default=1.0, help="engine ray: CPUs per run (default 1)")
    sw.add_argument("--gpus-per-run", type=_non_negative_float, default=0.0,
                    help="engine ray: GPUs per run, a fraction shares one (runs then use device cuda)")
    sw.set_defaults(func=cmd_sweep)

    rp = sub.add_parser("report", help="Markdown/CSV table and PNG curves of a sweep folder")
    rp.add_argument("sweep_dir")
    rp.add_argument("--reference", help="reference table (long CSV); default: the grid file's 'reference'")
    rp.add_argument("--threshold", type=_non_negative_float, default=10.0, help="list cells differing by more points (default 10)")
    rp.add_argument("--seeds", action="append", metavar="SWEEP_DIR",
                    help="a sweep folder that ran some of the cells at other seeds (repeatable): the report adds "
                         "each such cell's AASR and admitted share across seeds")
    rp.set_defaults(func=cmd_report)

    ls = sub.add_parser("list", help="list what can be named in a config: attacks, defenses, post-training "
                                     "methods, datasets, partitions, models")
    ls.add_argument("what", nargs="?", default="all", choices=["all", *LISTS])
    ls.set_defaults(func=cmd_list)
    return p


_PACKAGE_DIR = Path(__file__).resolve().parent


def is_user_error(exc: BaseException) -> bool:
    """True for the project's own errors (any exception class defined in fedshield: ConfigError, ParameterError,
    DataFileError, CheckpointError, OutputError …) and for a ValueError or OSError that fedshield code raised
    itself (its message is ours, or names the file). Anything raised inside a library is a bug: traceback."""
    if type(exc).__module__.split(".")[0] == "fedshield":
        return True
    if not isinstance(exc, (ValueError, OSError)):
        return False
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE_DIR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; the project's own errors become one ``fedshield: error: ...`` message and exit code 2,
    real bugs keep their traceback."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is one of ours
        if not is_user_error(exc):
            raise
        print(f"fedshield: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; continue with --resume (finished rounds are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
