"""``fedshield federate``: one experiment as a real Flower deployment, written to the simulator's run folder.

:func:`federate` starts a SuperLink and N SuperNodes, node i hosting the clients c with c mod N = i
(:class:`~fedshield.flower.federation.Federation`), writes a Flower app for the experiment
(``<out>/flower/app/pyproject.toml``: the resolved config travels inside the app, so SuperNodes on other
machines get it from the SuperLink), runs it with ``flwr run`` (each round trains the simulator's selection
of clients), prints one line per round from the strategy's JSON-lines log, and finally writes what
``fedshield run`` writes: ``config.yaml``, ``metrics.csv`` (the simulator's columns, plus ``dropped``),
``summary.json`` (plus ``engine: flower`` and ``nodes``), ``metrics.png`` and ``final_model.pt``. There is no
``checkpoint.pt``: a federated run cannot be resumed. Every process it started is stopped by PID when it
ends, fails, or is interrupted (SIGINT / SIGTERM).

With ``superlink_only`` no SuperNode is started here: the SuperLink listens on ``host`` and the command each
node runs on its own machine is printed; the run starts when ``nodes`` SuperNodes have connected.
"""

from __future__ import annotations

import json
import math
import signal
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import ConfigError, ExperimentConfig, dump_config
from ..metrics import flame_rates
from ..sim import plot_run, summarize
from ..sim.output import atomic_write_text, write_json, write_metrics_csv
from .federation import Federation, toml_value

__all__ = ["federate", "write_app", "rows_from_log", "FederateError"]

APP_TEMPLATE = """\
# Written by `fedshield federate` for one run; the experiment is inlined (fedshield-yaml), so every SuperNode
# gets it from the SuperLink together with the app.
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedshield-federate"
version = "1.0.0"
description = "fedshield experiment {name}"
license = "Apache-2.0"
dependencies = ["fedshield[flower]"]

[tool.flwr.app]
publisher = "fedshield"

[tool.flwr.app.components]
serverapp = "fedshield.flower.server_app:app"
clientapp = "fedshield.flower.client_app:app"

[tool.flwr.app.config]
"""


DEFAULT_MAX_NODES = 4
"""Default SuperNodes on one machine: one per client, at most this many (each is two processes)."""


class FederateError(RuntimeError):
    """The deployment failed (a process exited, the run returned an error); the message names the log."""


def write_app(app_dir: Path, cfg: ExperimentConfig, run_config: dict[str, Any]) -> Path:
    """A Flower app folder (only ``pyproject.toml``) whose run config holds ``cfg`` and ``run_config``."""
    app_dir.mkdir(parents=True, exist_ok=True)
    keys = {"fedshield-yaml": dump_config(cfg), "fedshield-config": "", **run_config}
    body = "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())
    (app_dir / "pyproject.toml").write_text(APP_TEMPLATE.format(name=cfg.name) + body)
    return app_dir


def _events(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return out


def rows_from_log(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The simulator's ``metrics.csv`` rows from the strategy's ``round`` and ``evaluate`` events."""
    evals = {e["round"]: e for e in events if e["event"] == "evaluate"}
    rows = []
    for e in events:
        if e["event"] != "round":
            continue
        t = e["round"]
        ev = evals.get(t, {})
        counts = {k: int(e.get(k, 0)) for k in ("tp", "fp", "tn", "fn")}
        row: dict[str, Any] = {
            "round": t,
            "ma": ev.get("ma", float("nan")) if ev.get("ma") is not None else float("nan"),
            "ba": ev.get("ba", float("nan")) if ev.get("ba") is not None else float("nan"),
            "selected": len(e.get("accepted_client_ids", [])) + len(e.get("rejected_client_ids", [])),
            "malicious": len(e.get("malicious_client_ids", [])),
            "accepted": len(e.get("accepted_client_ids", [])),
            **counts,
            **{k: round(v, 4) for k, v in flame_rates(**counts).items() if k.startswith("flame_")},
            "train_s": round(float(e.get("round_s", 0.0)) - float(e.get("aggregate_s", 0.0)), 4),
            "aggregate_s": float(e.get("aggregate_s", 0.0)),
        }
        row.update({f"info.{k}": v for k, v in (e.get("info") or {}).items()})
        # the evaluator's other metrics, as the simulator records them (traffic: detection_rate, fpr, f1)
        row.update({k: v for k, v in ev.items() if k not in ("event", "time", "round", "ma", "ba", "eval_s")})
        row["eval_s"] = float(ev.get("eval_s", 0.0))
        row["dropped"] = len(e.get("dropped", []))
        row["rejected_clients"] = " ".join(str(c) for c in e.get("rejected_client_ids", []))
        row["malicious_clients"] = " ".join(str(c) for c in e.get("malicious_client_ids", []))
        rows.append(row)
    return rows


def clients_kernels(events: list[dict[str, Any]]) -> str:
    """Which arithmetic the clients trained with, from their replies: "fedshield" (C kernels), "torch", "mixed"
    (some nodes could not build the kernels), or "unknown" (no reply said)."""
    seen = {int(c["kernels"]) for e in events if e.get("event") == "round" for c in e.get("clients", []) if "kernels" in c}
    if not seen:
        return "unknown"
    return "mixed" if len(seen) > 1 else ("fedshield" if seen == {1} else "torch")


def _round_line(row: dict[str, Any], rounds: int, seconds: float) -> str:
    ma = "  -  " if math.isnan(row["ma"]) else f"{row['ma']:.3f}"
    ba = "  -  " if math.isnan(row["ba"]) else f"{row['ba']:.3f}"
    rej = row["rejected_clients"] or "none"
    drop = f", dropped {row['dropped']}" if row["dropped"] else ""
    return (f"round {row['round']}/{rounds}: MA {ma}  BA {ba}  accepted {row['accepted']}/{row['selected']}"
            f" (rejected clients: {rej}{drop})  {seconds:.1f} s")


def _local_address() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent; picks the outgoing interface
            return str(s.getsockname()[0])
    except OSError:
        return socket.gethostname()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: stop everything, then exit."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(f"signal {signum}")


def federate(
    cfg: ExperimentConfig,
    out: str | Path,
    nodes: Optional[int] = None,
    superlink_only: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    advertise: Optional[str] = None,
    timeout: float = 3600.0,
    reply_poll: float = 0.1,
    batch_clients: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``cfg`` on a Flower deployment and write its run folder ``out``; returns the summary.

    ``nodes``: SuperNodes (1 … ``num_clients``; default one per client, at most :data:`DEFAULT_MAX_NODES`);
    node i hosts the clients c with c mod nodes = i. Each round trains the simulator's selection of clients
    (seeded, the same clients as ``fedshield run``), one message per node naming its selected clients.
    ``superlink_only``: start only the SuperLink on ``host:port`` and print the SuperNode commands, using
    ``advertise`` (default: this machine's address) as the address nodes connect to. ``reply_poll``: seconds
    between the ServerApp's pulls for replies (Flower's own grid waits 3 s). ``batch_clients``: one message
    (one ClientApp process) per node and round for all its selected clients; False: one per client.
    """
    nodes = min(cfg.num_clients, DEFAULT_MAX_NODES) if nodes is None else nodes
    if not 1 <= nodes <= cfg.num_clients:
        raise ConfigError(f"--nodes {nodes}: must be between 1 and the config's num_clients={cfg.num_clients}")
    if cfg.pretrain.rounds:
        raise ConfigError("pretrain.rounds: a warm start is not supported by federate yet; use --set pretrain.rounds=0")
    out = Path(out)
    if (out / "summary.json").exists():
        raise ConfigError(f"{out} already holds a finished run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    work = (out / "flower").resolve()
    rounds_log = work / "rounds.jsonl"
    if rounds_log.exists():
        rounds_log.unlink()
    app = write_app(
        work / "app",
        cfg,
        {
            "num-server-rounds": cfg.rounds,
            "client-selection": "fedshield",
            "fraction-evaluate": 0.0,
            "min-nodes": nodes,
            "server-eval": True,
            "log-file": str(rounds_log),
            "save-model": str((out / "final_model.pt").resolve()),
            "round-timeout": float(timeout),
            "reply-poll": float(reply_poll),
            "batch-clients": bool(batch_clients),
        },
    )
    fed = Federation(work, num_nodes=nodes, host=host, port=port)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    t0 = time.perf_counter()
    try:
        fed.start_superlink()
        if superlink_only:
            address = advertise or _local_address()
            log(f"SuperLink listening on {host}:{fed.port}. On each node's machine (fedshield[flower] installed), run:")
            for i, cmd in enumerate(fed.remote_supernode_commands(address)):
                log(f"  node {i}: {cmd}")
            log(f"the run starts when {nodes} SuperNodes have connected")
        else:
            fed.start_supernodes()
        proc = fed.launch(app)
        shown = 0
        while True:
            done = proc.poll() is not None
            rows = rows_from_log(_events(rounds_log))
            for row in rows[shown:]:
                t = row["round"]
                evaluated_later = t % cfg.eval.every == 0 or t == cfg.rounds
                if not math.isnan(row["ma"]) or not evaluated_later or done:
                    log(_round_line(row, cfg.rounds, time.perf_counter() - t0))
                    shown += 1
                else:
                    break  # wait for the round's evaluation
            if done:
                break
            if not superlink_only:
                fed.check_running()
            if time.perf_counter() - t0 > timeout:
                raise FederateError(f"the run did not finish within {timeout:.0f} s; see {fed.log_path('flwr-run')}")
            time.sleep(0.2)
        events = _events(rounds_log)
        if proc.returncode != 0 or not events or events[-1]["event"] != "finish":
            tail = fed.log_path("flwr-run").read_text(errors="replace")[-3000:]
            raise FederateError(
                f"flwr run ended with code {proc.returncode} after {len(rows)} of {cfg.rounds} rounds; logs in {work}\n{tail}"
            )
    finally:
        fed.stop()
        signal.signal(signal.SIGTERM, previous)
    seconds = time.perf_counter() - t0
    rows = rows_from_log(events)
    write_metrics_csv(out / "metrics.csv", rows)
    summary = summarize(cfg, rows, seconds)
    summary.update({"engine": "flower", "nodes": nodes, "kernels": clients_kernels(events)})
    plot_run(rows, out / "metrics.png", title=f"{cfg.name} (Flower, {nodes} nodes)")
    write_json(out / "summary.json", summary)
    return summary
