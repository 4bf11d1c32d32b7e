"""``fedshield federate``: a real Flower deployment on loopback (a SuperLink and SuperNodes as separate
processes; 3 clients on 2 nodes, client 2 doing model replacement ×20), FLAME for two rounds. Checked: the run folder holds the
simulator's files with the simulator's metrics columns, the attacker is rejected in every round, and no
process the command started (seen by PID while it ran: SuperLink, SuperNodes, SuperExecs, ServerApp,
ClientApps) is left running, after a normal end and after Ctrl-C. ~50 s on 2 cores.

The simulation-engine run (Ray, ~45 s and ~2 GB) runs only with FEDSHIELD_FLOWER_SIM=1.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="Flower is not installed (pip install 'fedshield[flower]')")

from fedshield.flower.federation import run_simulation, stop_managed_superlinks  # noqa: E402
from fedshield.flower.processes import alive, cmdline, descendants  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "flower"
CONFIG = APP / "configs" / "synthetic3_flame.yaml"
REPLACEMENT = ["--set", "attack.name=model_replacement", "--set", "attack.params.factor=20"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _watch(proc, until=None, seen=None):
    """Record every descendant of ``proc`` (pid -> program name) until it exits or ``until(seen)`` holds."""
    seen = {} if seen is None else seen
    while proc.poll() is None:
        for pid in descendants(proc.pid):
            args = cmdline(pid)
            if args and pid not in seen:
                seen[pid] = (Path(args[1] if Path(args[0]).name.startswith("python") and len(args) > 1 else args[0]).name, args)
        if until is not None and until(seen):
            break
        time.sleep(0.1)
    return seen


def _survivors(seen):
    return {pid: name for pid, (name, args) in seen.items() if alive(pid) and cmdline(pid) == args}


def _start(out, *extra):
    cmd = [sys.executable, "-m", "fedshield", "federate", str(CONFIG), "--set", "rounds=2", *REPLACEMENT,
           "--out", str(out), *extra]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)


def test_federate_writes_the_run_folder_rejects_the_attacker_and_stops_every_process(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, "--nodes", "2")  # 3 clients on 2 nodes: node 0 hosts clients 0 and 2
    seen = _watch(proc)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-4000:]
    names = [name for name, _ in seen.values()]
    assert names.count("flower-supernode") == 2 and "flower-superlink" in names, names
    assert "flwr-clientapp" in names and "flwr-serverapp" in names, names
    assert _survivors(seen) == {}, "processes left running"

    # one progress line per round, plain lines (no carriage returns)
    assert "round 1/2:" in output and "round 2/2:" in output and "\r" not in output

    for f in ("config.yaml", "metrics.csv", "summary.json", "metrics.png", "final_model.pt"):
        assert (out / f).is_file(), f
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["round"]) for r in rows] == [1, 2]
    for r in rows:
        assert r["rejected_clients"] == "2" and int(r["tp"]) == 1 and int(r["fn"]) == 0 and int(r["accepted"]) == 2
        assert 0.0 <= float(r["ma"]) <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "flower" and summary["rounds_done"] == 2
    assert summary["malicious_accepted_share"] == 0.0 and summary["benign_accepted_share"] == 1.0

    # the simulator's columns are all there (a 1-round in-process run of the same config)
    sim = tmp_path / "sim"
    subprocess.run([sys.executable, "-m", "fedshield", "run", str(CONFIG), "--set", "rounds=1", *REPLACEMENT,
                    "--out", str(sim), "--quiet"], env=_env(), check=True, capture_output=True, stdin=subprocess.DEVNULL)
    with open(sim / "metrics.csv") as f:
        sim_columns = set(next(csv.reader(f)))
    assert sim_columns <= set(rows[0]), sim_columns - set(rows[0])
    assert set(json.loads((sim / "summary.json").read_text())) <= set(summary)


def test_federate_ctrl_c_stops_every_process(tmp_path):
    proc = _start(tmp_path / "run")
    started = lambda seen: sum(name == "flower-supernode" for name, _ in seen.values()) == 3  # noqa: E731
    seen = _watch(proc, until=started)
    assert started(seen), proc.communicate()[0][-3000:]
    time.sleep(1.0)
    _watch(proc, until=lambda s: True, seen=seen)  # whatever the nodes started meanwhile
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted" in output
    assert _survivors(seen) == {}, "processes left running after Ctrl-C"


def test_federate_refuses_more_nodes_than_clients(tmp_path):
    p = subprocess.run([sys.executable, "-m", "fedshield", "federate", str(CONFIG), "--nodes", "4", "--out",
                        str(tmp_path / "x")], env=_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "num_clients=3" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "x").exists()  # refused before anything was started or written


@pytest.mark.skipif(os.environ.get("FEDSHIELD_FLOWER_SIM") != "1", reason="Ray simulation (~45 s, ~2 GB): set FEDSHIELD_FLOWER_SIM=1")
def test_simulation_engine_three_rounds(tmp_path):
    log = tmp_path / "rounds.jsonl"
    run_cfg = {"num-server-rounds": 3, "log-file": str(log),
               "fedshield-set": "attack.name=model_replacement;attack.params.factor=20"}
    try:
        proc = run_simulation(APP, tmp_path, run_cfg, timeout=400)
    finally:
        leftover = stop_managed_superlinks(tmp_path / "cli-sim")
    assert leftover == []
    assert proc.returncode == 0, proc.stdout[-4000:]
    rows = [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "round"]
    assert [r["round"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert 2 in r["rejected_client_ids"] and r["tp"] == 1 and r["fn"] == 0
