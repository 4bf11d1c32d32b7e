"""The processes of a Flower deployment: where the binaries are, their environment, free ports, and stopping
them (and everything they started) by PID. Linux ``/proc``; no Flower import.

Flower's binaries are looked up next to the running interpreter first (``<venv>/bin``), so they are found
when the virtual environment is not on ``PATH``; the environment handed to every child puts that folder first
on ``PATH``, because ``flower-superlink`` / ``flower-supernode`` start ``flower-superexec`` by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

__all__ = [
    "BIN_DIR",
    "flower_bin",
    "flower_env",
    "free_port",
    "descendants",
    "alive",
    "cmdline",
    "stop_pids",
    "process_start_time",
]

BIN_DIR = Path(sys.executable).parent
"""The folder of the running interpreter (a virtual environment's ``bin``), where pip put Flower's binaries."""


def flower_bin(name: str) -> str:
    """Absolute path of a Flower executable (``flwr``, ``flower-superlink`` …): next to ``sys.executable``,
    else on ``PATH``; a clear error if neither has it."""
    local = BIN_DIR / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        f"{name} not found in {BIN_DIR} or on PATH; install Flower: pip install \"torch==2.13.0\" -e \".[flower]\""
    )


def flower_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for one Flower process: its own ``FLWR_HOME``, no telemetry, no update check, no runtime
    dependency installation, the SuperExec's task polling at 0.1 s (Flower's default: 1 s), and ``PATH``
    starting with :data:`BIN_DIR`."""
    env = os.environ.copy()
    env.update(
        {
            "FLWR_HOME": str(home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": env.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1"),
            "PATH": f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    env.update(extra)
    home.mkdir(parents=True, exist_ok=True)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _stat_fields(pid: int | str) -> Optional[list[str]]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of ``pid``, breadth first (children before grandchildren)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and len(fields) > 1:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(0), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cmdline(pid: int) -> list[str]:
    """The arguments ``pid`` was started with ([] when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def stop_pids(pids: Sequence[int], grace: float = 5.0) -> list[int]:
    """SIGTERM each PID, wait up to ``grace`` s, SIGKILL the survivors; returns the PIDs that were signalled."""
    sent = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            sent.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in sent):
        time.sleep(0.05)
    for pid in sent:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return sent


def process_start_time(pid: int | str = "self") -> Optional[float]:
    """Wall-clock time (``time.time()`` scale) at which ``pid`` started, from ``/proc``; None if unknown."""
    fields = _stat_fields(pid)  # type: ignore[arg-type]
    try:
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: ticks since boot
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (TypeError, ValueError, IndexError, OSError):
        return None
