"""Issue 6: a real Flower deployment on loopback — a SuperLink and three SuperNodes as separate processes, one
node an attacker doing model replacement; two rounds of FLAME through ``flwr run``; the attacker's update must
be rejected in both rounds. Every process started (and their children, and any managed SuperLink) is stopped
by PID. Needs Flower; skipped with a reason if it is not installed. ~60 s on 2 cores (Flower's nodes and
ServerApp poll every 3 s, and every message starts a fresh ClientApp process).

The simulation-engine run (Ray, ~45 s and ~2 GB) runs only with FEDSHIELD_FLOWER_SIM=1.
"""

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="Flower is not installed (pip install 'fedshield[flower]')")

from fedshield.flower.localnet import LocalFederation, _alive, run_simulation, stop_managed_superlinks  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "examples" / "flower"
SCALE = 20.0


def _model_replacement():
    """Run config and node configs for a scaling attacker on partition 2 (the ``model_replacement`` attack)."""
    return {"fedshield-set": f"attack.name=model_replacement;attack.params.factor={SCALE}"}, {}


def _events(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _check_attacker_rejected(events, rounds):
    rows = [e for e in events if e["event"] == "round"]
    assert [r["round"] for r in rows] == list(range(1, rounds + 1))
    for r in rows:
        assert r["dropped"] == [], r["dropped"]
        assert r["malicious_client_ids"] == [2]
        assert 2 in r["rejected_client_ids"] and 2 not in r["accepted_client_ids"], r
        assert r["tp"] == 1 and r["fn"] == 0
    assert events[-1]["event"] == "finish"


def test_deployment_flame_rejects_model_replacement(tmp_path):
    run_cfg, attacker_node_cfg = _model_replacement()
    log = tmp_path / "rounds.jsonl"
    fed = LocalFederation(tmp_path / "fed", num_nodes=3, node_config=lambda i: attacker_node_cfg if i == 2 else {})
    try:
        fed.start()
        proc = fed.run(APP, {"num-server-rounds": 2, "defense": "flame", "log-file": str(log), **run_cfg}, timeout=240)
    finally:
        stopped = fed.stop()
    started = [p.pid for _, p in fed.procs]
    assert set(started) <= set(stopped) | {p.pid for _, p in fed.procs if p.returncode is not None}
    assert not any(_alive(pid) for pid in stopped), "a Flower process survived stop()"
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert log.exists(), proc.stdout[-4000:]
    events = _events(log)
    assert events[0]["event"] == "start" and events[0]["defense"] == "flame"
    _check_attacker_rejected(events, 2)


@pytest.mark.skipif(os.environ.get("FEDSHIELD_FLOWER_SIM") != "1", reason="Ray simulation (~45 s, ~2 GB): set FEDSHIELD_FLOWER_SIM=1")
def test_simulation_engine_three_rounds(tmp_path):
    run_cfg, _ = _model_replacement()
    log = tmp_path / "rounds.jsonl"
    try:
        proc = run_simulation(APP, tmp_path, {"num-server-rounds": 3, "log-file": str(log), **run_cfg}, timeout=400)
    finally:
        leftover = stop_managed_superlinks(tmp_path / "cli-sim")
    assert leftover == []
    assert proc.returncode == 0, proc.stdout[-4000:]
    _check_attacker_rejected(_events(log), 3)
