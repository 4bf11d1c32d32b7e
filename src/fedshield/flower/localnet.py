"""Start a real Flower federation on loopback (SuperLink + SuperNodes as processes), run an app, stop it all.

Used by the tests and ``benchmarks/flower_round_time.py``; handy for trying a deployment on one machine.
Every process gets its own ``FLWR_HOME`` under ``workdir``, free 127.0.0.1 ports, telemetry, update checks and
runtime dependency installation off. :meth:`LocalFederation.stop` ends every process it started, and their
descendants (``flwr-serverapp``, ``flwr-clientapp``), by PID; :func:`stop_managed_superlinks` finds the
detached SuperLink that ``flwr run <app> local`` starts for the simulation engine and stops it by PID.

    with LocalFederation(workdir, num_nodes=3, node_config=lambda i: {}) as fed:
        proc = fed.run("examples/flower", {"num-server-rounds": 2, "log-file": "/tmp/rounds.jsonl"})
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

__all__ = [
    "LocalFederation",
    "free_port",
    "flower_env",
    "toml_value",
    "run_config_args",
    "descendants",
    "stop_pids",
    "stop_managed_superlinks",
    "run_simulation",
]

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flower_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for one Flower process: its own FLWR_HOME, nothing phoning home, no runtime installs."""
    env = os.environ.copy()
    env.update(
        {
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": env.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1"),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    env.update(extra)
    home.mkdir(parents=True, exist_ok=True)
    return env


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a TOML basic string


def run_config_args(run_config: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in run_config.items():
        out += ["-c", f"{k}={toml_value(v)}"]
    return out


def _ppid(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid`` (Linux /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pp = _ppid(int(entry))
            if pp is not None:
                children.setdefault(pp, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_pids(pids: Sequence[int], grace: float = 5.0) -> list[int]:
    """SIGTERM each PID, wait up to ``grace`` s, SIGKILL survivors; returns the PIDs signalled."""
    sent = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            sent.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in sent):
        time.sleep(0.05)
    for pid in sent:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return sent


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def stop_managed_superlinks(flwr_home: Path, port: Optional[int] = None) -> list[int]:
    """Stop (by PID) the detached ``flower-superlink`` that ``flwr run … local`` started with this FLWR_HOME
    (its log file lives there) or on ``port``; returns their PIDs."""
    found = []
    home = str(Path(flwr_home).resolve())
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        args = _cmdline(int(entry))
        if not any(Path(a).name == "flower-superlink" for a in args[:2]):
            continue
        mine = any(a.startswith(home) for a in args)
        if port is not None and "--port" in args:
            i = args.index("--port")
            mine = mine or (i + 1 < len(args) and args[i + 1] == str(port))
        if mine:
            found.append(int(entry))
    pids = []
    for pid in found:
        pids += descendants(pid) + [pid]
    stop_pids(pids)
    return found


def _wait_port(port: int, timeout: float, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} before opening port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{name} did not open 127.0.0.1:{port} within {timeout:.0f} s")


class LocalFederation:
    """A SuperLink and ``num_nodes`` SuperNodes on 127.0.0.1, each its own process and FLWR_HOME."""

    def __init__(
        self,
        workdir: str | Path,
        num_nodes: int = 3,
        node_config: Optional[Callable[[int], Mapping[str, Any]]] = None,
        env: Optional[Mapping[str, str]] = None,
    ):
        self.workdir = Path(workdir).resolve()
        self.num_nodes = num_nodes
        self.node_config = node_config or (lambda i: {})
        self.extra_env = dict(env or {})
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.port = free_port()
        self.cli_home = self.workdir / "cli"
        self._logs: list[Any] = []

    def _spawn(self, name: str, args: list[str], home: Path) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        self._logs.append(log)
        proc = subprocess.Popen(
            args, env=flower_env(home, **self.extra_env), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def start(self, timeout: float = 60.0) -> "LocalFederation":
        self.workdir.mkdir(parents=True, exist_ok=True)
        link = self._spawn(
            "superlink",
            [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port", str(self.port),
             "--disable-runtime-dependency-installation"],
            self.workdir / "link",
        )
        _wait_port(self.port, timeout, link, "flower-superlink")
        for i in range(self.num_nodes):
            cfg = {"partition-id": i, "num-partitions": self.num_nodes, **self.node_config(i)}
            node_cfg = " ".join(f"{k}={toml_value(v)}" for k, v in cfg.items())
            self._spawn(
                f"node{i}",
                [str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                 "--port", str(free_port()), "--node-config", node_cfg],
                self.workdir / f"node{i}",
            )
        self._write_cli_config()
        return self

    def _write_cli_config(self) -> None:
        self.cli_home.mkdir(parents=True, exist_ok=True)
        (self.cli_home / "config.toml").write_text(
            '[superlink]\ndefault = "local-deployment"\n\n'
            f'[superlink.local-deployment]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )

    def run(self, app_dir: str | Path, run_config: Mapping[str, Any], timeout: float = 600.0) -> subprocess.CompletedProcess:
        """``flwr run <app_dir> local-deployment --stream -c …``; waits for the run to finish."""
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {self.workdir / (name + '.log')}")
        args = [str(BIN / "flwr"), "run", str(Path(app_dir).resolve()), "local-deployment", "--stream",
                *run_config_args(run_config)]
        env = flower_env(self.cli_home, **self.extra_env)
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True)
        self.procs.append(("flwr-run", proc))
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_pids(descendants(proc.pid) + [proc.pid])
            out, _ = proc.communicate()
            raise TimeoutError(f"flwr run did not finish within {timeout:.0f} s:\n{out[-4000:]}") from None
        (self.workdir / "flwr-run.log").write_text(out)
        return subprocess.CompletedProcess(args, proc.returncode, out, "")

    def stop(self) -> list[int]:
        """Stop every process started here and their descendants, by PID (children first)."""
        pids: list[int] = []
        for _, proc in reversed(self.procs):
            pids += descendants(proc.pid) + [proc.pid]
        sent = stop_pids(pids)
        for _, proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        # a managed SuperLink, should `flwr run` ever have started one with our CLI home
        sent += stop_managed_superlinks(self.cli_home)
        for log in self._logs:
            log.close()
        return sent

    def __enter__(self) -> "LocalFederation":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def run_simulation(
    app_dir: str | Path,
    workdir: str | Path,
    run_config: Mapping[str, Any],
    num_supernodes: int = 3,
    cpus_per_client: int = 1,
    timeout: float = 600.0,
) -> subprocess.CompletedProcess:
    """``flwr run <app_dir> local --stream`` on Flower's simulation engine (Ray), then stop the managed local
    SuperLink ``flwr run`` started (it would keep running), by PID. Ports are free ones chosen here."""
    workdir = Path(workdir).resolve()
    home = workdir / "cli-sim"
    http_port, control_port = free_port(), free_port()
    env = flower_env(
        home,
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port),
        FLWR_LOCAL_CONTROL_API_PORT=str(control_port),
    )
    (home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n')
    started: list[subprocess.Popen] = []
    try:
        cmd = [str(BIN / "flwr"), "federation", "simulation-config", "@none/default", "local",
               "--num-supernodes", str(num_supernodes), "--client-resources-num-cpus", str(cpus_per_client)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
        args = [str(BIN / "flwr"), "run", str(Path(app_dir).resolve()), "local", "--stream", *run_config_args(run_config)]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, cwd=workdir, start_new_session=True)
        started.append(proc)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_pids(descendants(proc.pid) + [proc.pid])
            out, _ = proc.communicate()
            raise TimeoutError(f"flwr run (simulation) did not finish within {timeout:.0f} s:\n{out[-4000:]}") from None
        (workdir / "flwr-run-sim.log").write_text(out)
        return subprocess.CompletedProcess(args, proc.returncode, out, "")
    finally:
        for proc in started:
            stop_pids(descendants(proc.pid) + [proc.pid])
        stop_managed_superlinks(home, http_port)
