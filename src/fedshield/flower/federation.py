"""A Flower deployment started from Python: a SuperLink and SuperNodes as processes, ``flwr run``, and stopping
every process started (and their children) by PID.

Every process gets its own ``FLWR_HOME`` under ``workdir`` and the environment of
:func:`~fedshield.flower.processes.flower_env`; ports are free ones chosen here. The SuperLink listens on
``host`` (127.0.0.1 on one machine, 0.0.0.0 to let SuperNodes on other machines in); the ``flwr`` CLI always
reaches it on 127.0.0.1. ``fedshield federate`` (:mod:`fedshield.flower.federate`) drives this class.

    with Federation(workdir, num_nodes=3) as fed:            # SuperLink + 3 SuperNodes on loopback
        proc = fed.run(app_dir)                              # flwr run <app_dir> local-deployment --stream
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, IO, Mapping, Optional

from .processes import cmdline, descendants, flower_bin, flower_env, free_port, stop_pids

__all__ = ["Federation", "toml_value", "node_config_string", "supernode_command", "run_simulation", "stop_managed_superlinks"]

CONNECTION = "local-deployment"


def toml_value(v: Any) -> str:
    """``v`` as a TOML value (bool, int, float, or a basic string; JSON string escapes are valid TOML)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def node_config_string(node_config: Mapping[str, Any]) -> str:
    """``--node-config`` argument: space-separated ``key=value`` pairs."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in node_config.items())


def supernode_command(superlink: str, node_config: Mapping[str, Any], port: int = 9094) -> list[str]:
    """The command that starts a SuperNode connecting to ``superlink`` (``host:port``), as argv."""
    return [
        "flower-supernode", "--insecure", "--superlink", superlink, "--port", str(port),
        "--node-config", node_config_string(node_config),
    ]


def _wait_port(port: int, timeout: float, proc: subprocess.Popen, name: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} before opening port {port}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{name} did not open 127.0.0.1:{port} within {timeout:.0f} s; see {log}")


class Federation:
    """A SuperLink and ``num_nodes`` SuperNodes, each its own process and ``FLWR_HOME`` under ``workdir``.

    ``node_config(i)`` adds keys to node i's ``--node-config`` (which always has ``partition-id=i`` and
    ``num-partitions=num_nodes``). Logs: ``workdir/<name>.log``. :attr:`procs` lists (name, Popen) of every
    process started here; :meth:`stop` ends them and all their descendants.
    """

    def __init__(
        self,
        workdir: str | Path,
        num_nodes: int = 3,
        node_config: Optional[Callable[[int], Mapping[str, Any]]] = None,
        host: str = "127.0.0.1",
        port: int = 0,
        env: Optional[Mapping[str, str]] = None,
    ):
        self.workdir = Path(workdir).resolve()
        self.num_nodes = num_nodes
        self.node_config = node_config or (lambda i: {})
        self.host = host
        self.port = port or free_port()
        self.extra_env = dict(env or {})
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.cli_home = self.workdir / "cli"
        self._logs: list[IO[str]] = []

    # ------------------------------------------------------------------ processes
    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def _spawn(self, name: str, args: list[str], home: Path) -> subprocess.Popen:
        log = open(self.log_path(name), "w")
        self._logs.append(log)
        proc = subprocess.Popen(
            args, env=flower_env(home, **self.extra_env), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def node_config_of(self, i: int) -> dict[str, Any]:
        return {"partition-id": i, "num-partitions": self.num_nodes, **self.node_config(i)}

    def start_superlink(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        link = self._spawn(
            "superlink",
            [flower_bin("flower-superlink"), "--insecure", "--host", self.host, "--port", str(self.port),
             "--disable-runtime-dependency-installation"],
            self.workdir / "link",
        )
        _wait_port(self.port, timeout, link, "flower-superlink", self.log_path("superlink"))
        self._write_cli_config()

    def start_supernodes(self) -> None:
        for i in range(self.num_nodes):
            args = supernode_command(f"127.0.0.1:{self.port}", self.node_config_of(i), free_port())
            self._spawn(f"node{i}", [flower_bin(args[0]), *args[1:]], self.workdir / f"node{i}")

    def start(self, timeout: float = 60.0) -> "Federation":
        self.start_superlink(timeout)
        self.start_supernodes()
        return self

    def remote_supernode_commands(self, address: str) -> list[str]:
        """Shell commands that start node i on another machine, connecting to this SuperLink at ``address``."""
        return [
            "FLWR_HOME=$HOME/.flwr-node{0} FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 "
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.1 ".format(i)
            + shlex.join(supernode_command(f"{address}:{self.port}", self.node_config_of(i)))
            for i in range(self.num_nodes)
        ]

    def _write_cli_config(self) -> None:
        self.cli_home.mkdir(parents=True, exist_ok=True)
        (self.cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )

    def check_running(self) -> None:
        """Raise naming the first process started here that has exited, with its log."""
        for name, proc in self.procs:
            if name != "flwr-run" and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {self.log_path(name)}")

    # ------------------------------------------------------------------ runs
    def launch(self, app_dir: str | Path, run_config: Mapping[str, Any] | None = None) -> subprocess.Popen:
        """Start ``flwr run <app_dir> local-deployment --stream [-c key=value …]`` (output in ``flwr-run.log``);
        returns at once."""
        self.check_running()
        args = [flower_bin("flwr"), "run", str(Path(app_dir).resolve()), CONNECTION, "--stream"]
        for k, v in (run_config or {}).items():
            args += ["-c", f"{k}={toml_value(v)}"]
        return self._spawn("flwr-run", args, self.cli_home)

    def run(self, app_dir: str | Path, run_config: Mapping[str, Any] | None = None, timeout: float = 600.0) -> subprocess.CompletedProcess:
        """:meth:`launch` and wait for the run to end; ``stdout`` of the result is the ``flwr run`` output."""
        proc = self.launch(app_dir, run_config)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_pids(descendants(proc.pid) + [proc.pid])
            raise TimeoutError(f"flwr run did not finish within {timeout:.0f} s; see {self.log_path('flwr-run')}") from None
        out = self.log_path("flwr-run").read_text(errors="replace")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    def stop(self) -> list[int]:
        """Stop every process started here and all their descendants, by PID (children first); returns the
        PIDs signalled. Safe to call twice."""
        pids: list[int] = []
        for _, proc in reversed(self.procs):
            pids += list(reversed(descendants(proc.pid))) + [proc.pid]
        sent = stop_pids(pids)
        for _, proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        for log in self._logs:
            log.close()
        self._logs.clear()
        return sent

    def __enter__(self) -> "Federation":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def stop_managed_superlinks(flwr_home: Path, port: Optional[int] = None) -> list[int]:
    """Stop (by PID) the detached ``flower-superlink`` that ``flwr run <app> local`` started with this
    ``FLWR_HOME`` (its arguments name it) or on ``port``, and its descendants; returns the SuperLinks' PIDs."""
    home = str(Path(flwr_home).resolve())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        args = cmdline(int(entry))
        if not any(Path(a).name == "flower-superlink" for a in args[:2]):
            continue
        mine = any(a.startswith(home) for a in args)
        if port is not None and "--port" in args:
            i = args.index("--port")
            mine = mine or (i + 1 < len(args) and args[i + 1] == str(port))
        if mine:
            found.append(int(entry))
    pids: list[int] = []
    for pid in found:
        pids += list(reversed(descendants(pid))) + [pid]
    stop_pids(pids)
    return found


def run_simulation(
    app_dir: str | Path,
    workdir: str | Path,
    run_config: Mapping[str, Any],
    num_supernodes: int = 3,
    cpus_per_client: int = 1,
    timeout: float = 600.0,
) -> subprocess.CompletedProcess:
    """``flwr run <app_dir> local --stream`` on Flower's simulation engine (Ray), on free ports, then stop the
    managed local SuperLink that ``flwr run`` leaves running, by PID."""
    workdir = Path(workdir).resolve()
    home = workdir / "cli-sim"
    http_port, control_port = free_port(), free_port()
    env = flower_env(home, FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port), FLWR_LOCAL_CONTROL_API_PORT=str(control_port))
    (home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n')
    started: list[subprocess.Popen] = []
    try:
        cmd = [flower_bin("flwr"), "federation", "simulation-config", "@none/default", "local",
               "--num-supernodes", str(num_supernodes), "--client-resources-num-cpus", str(cpus_per_client)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
        args = [flower_bin("flwr"), "run", str(Path(app_dir).resolve()), "local", "--stream"]
        for k, v in run_config.items():
            args += ["-c", f"{k}={toml_value(v)}"]
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
