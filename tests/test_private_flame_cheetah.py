"""Private FLAME without a dealer (correlations: cheetah): the servers compute the correlations under SPU's CHEETAH
protocol. They must be the dealer's, bit for bit; a round must admit the same clients and give the same model
as the dealer mode and the plaintext twin; no server may receive the other's seed; a dead server is still named.

These tests run the servers (and one check script) in SPU's virtualenv ``.venv-spu``, which ``make test``
creates (``make spu``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fedshield.defenses import ParameterError, build_defense
from fedshield.defenses.flame import FLAME
from fedshield.defenses.private_flame import PrivateFLAME
from fedshield.mpc import transport
from fedshield.mpc.cheetah import spu_python
from fedshield.mpc.session import REPO_ROOT, PrivateFlameError
from proctools import pid_alive
from roundinput import make_input

os.environ.setdefault("OMP_NUM_THREADS", "1")
SPU_PYTHON = spu_python(REPO_ROOT)
pytestmark = pytest.mark.skipif(not os.path.exists(SPU_PYTHON),
                                reason=f"SPU's virtualenv is missing ({SPU_PYTHON}); `make spu` creates it")


def attacked_round(seed: int, n: int, n_att: int, d: int) -> np.ndarray:
    """Benign updates around one direction, attackers (first rows) around an orthogonal one; norms differ."""
    rng = np.random.default_rng(seed)
    base, other = rng.normal(size=d), rng.normal(size=d)
    other -= (other @ base) / (base @ base) * base
    u = np.concatenate([3.0 * other + 0.3 * rng.normal(size=(n_att, d)), base + 0.3 * rng.normal(size=(n - n_att, d))])
    return 0.05 * u * rng.uniform(0.5, 3.0, size=(n, 1))


def test_every_correlation_kind_equals_the_dealers_bit_for_bit():
    requests = [["mul", {"shape": [3, 4]}], ["mul", {"shape": [5]}], ["matmul", {"n": 3, "k": 5, "m": 2}],
                ["cmp", {"n": 9, "shift": 0}], ["cmp", {"n": 6, "shift": 28}], ["cmp", {"n": 4, "shift": 1}],
                ["gram", {"n": 4, "d": 11, "d_tr": 7}], ["gram", {"n": 3, "d": 5, "d_tr": 5}], ["svec", {"d": 6}]]
    env = dict(os.environ, PYTHONPATH=str(Path(REPO_ROOT) / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run([SPU_PYTHON, str(Path(__file__).with_name("spu_correlations_check.py")),
                           json.dumps(requests)], capture_output=True, text=True, env=env, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, proc.stderr[-2000:]
    report = json.loads(line[len("RESULT "):])
    assert report["errors"] == [] and report["codec"]
    assert [(r["kind"], r["params"]) for r in report["results"]] == [tuple(r) for r in requests]
    assert all(r["A"] and r["B"] for r in report["results"]), report["results"]
    assert report["runs"] == len(requests)


def test_cheetah_round_equals_dealer_round_and_twin_and_no_server_gets_the_others_seed(monkeypatch):
    """n = 6, d = 200, two attackers, noise off: the same admitted clients as the dealer mode and the plaintext
    twin, the dealer mode's model bit for bit (same seeds, same correlations), the twin's within the fixed-point
    error. Every frame the coordinator sends is recorded: A gets only A's correlation seed, B only B's, and in
    cheetah mode there is no dealer channel."""
    sent: list[tuple[str, str, np.ndarray | None]] = []
    original = transport.Channel.send

    def recording_send(self, header, array=None):
        sent.append((self.peer, header.get("t"), None if array is None else np.array(array, copy=True)))
        return original(self, header, array)

    u = attacked_round(0, 6, 2, 200)
    twin = FLAME(clustering="dbscan", noise=False, search_steps=10).aggregate(make_input(u, seed=3))
    with PrivateFLAME(noise=False, search_steps=10, timeout_s=120) as dealer:
        by_dealer = dealer.aggregate(make_input(u, seed=3))  # a fresh generator: the same round seed
    monkeypatch.setattr(transport.Channel, "send", recording_send)
    with PrivateFLAME(noise=False, search_steps=10, timeout_s=120, correlations="cheetah") as cheetah:
        got = cheetah.aggregate(make_input(u, seed=3))
        assert cheetah.server_pair.dealer_ch is None
    assert got.accepted.tolist() == twin.accepted.tolist() == by_dealer.accepted.tolist() == [False] * 2 + [True] * 4
    assert torch.equal(got.global_params, by_dealer.global_params)
    assert (got.global_params.double() - twin.global_params.double()).abs().max().item() < 2.0 ** -15
    assert got.info["mpc_mbytes_spu_A_to_B"] > 0 and got.info["mpc_mbytes_spu_B_to_A"] > 0

    to_coord = [(peer, t, a) for peer, t, a in sent if peer in ("server A", "server B")]
    frames = {role: {t for peer, t, _ in to_coord if peer == f"server {role}"} for role in "AB"}
    assert frames["A"] == {"hello", "round", "g", "corr_seed", "seeds", "shutdown"}
    assert frames["B"] == {"hello", "round", "g", "corr_seed", "share", "shutdown"}
    seed_a = next(a for peer, t, a in to_coord if peer == "server A" and t == "corr_seed").tobytes()
    seed_b = next(a for peer, t, a in to_coord if peer == "server B" and t == "corr_seed").tobytes()
    assert len(seed_a) == len(seed_b) == 32 and seed_a != seed_b
    for peer, other in (("server A", seed_b), ("server B", seed_a)):  # nothing A receives holds B's seed, and back
        assert not any(a is not None and other in a.tobytes() for p, _, a in to_coord if p == peer)


def test_cheetah_needs_spu_venv_and_valid_name(monkeypatch):
    with pytest.raises(ParameterError, match="correlations.*allowed: 'dealer', 'cheetah'"):
        PrivateFLAME(correlations="ot")
    monkeypatch.setenv("FEDSHIELD_SPU_PYTHON", "/nonexistent/python")
    with pytest.raises(ParameterError, match="make spu"):
        PrivateFLAME(correlations="cheetah")
    assert PrivateFLAME(correlations="cheetah", launch=False).correlations == "cheetah"  # servers run elsewhere
    monkeypatch.delenv("FEDSHIELD_SPU_PYTHON")
    assert build_defense("private_flame", {"correlations": "cheetah"}).correlations == "cheetah"  # from a config


def test_killed_server_in_cheetah_mode_gives_clear_error_within_timeout(monkeypatch):
    """Kill server B in the middle of the 2PC (when it reports the clustering step, whose comparisons draw
    their correlations from SPU runs with A): the error names server B and that step, within the timeout; no
    process is left."""
    timeout = 40.0
    u = attacked_round(1, 6, 2, 2000)
    private = PrivateFLAME(search_steps=6, timeout_s=timeout, noise=False, correlations="cheetah")
    inp = make_input(u)
    private.aggregate(inp)  # warm: both servers and their SPU link up
    pids = dict(private.server_pair.pids)
    real_recv = transport.Channel.recv
    killed = []

    def recv_then_kill_b(self, expect=None):
        header, array = real_recv(self, expect)
        if self.peer == "server B" and header.get("t") == "step" and header.get("name") == "clustering":
            os.kill(pids["B"], signal.SIGKILL)
            killed.append(time.monotonic())
        return header, array

    monkeypatch.setattr(transport.Channel, "recv", recv_then_kill_b)
    t0 = time.monotonic()
    with pytest.raises(PrivateFlameError, match=r"server B failed during step 'clustering'"):
        private.aggregate(inp)
    assert killed and time.monotonic() - t0 < timeout
    private.close()
    assert not any(pid_alive(p) for p in pids.values())


def test_long_spu_runs_keep_the_servers_alive_for_the_coordinator():
    """A fresh pair's first round compiles and runs SPU programs for seconds between two step reports; the
    servers' heartbeat keeps the coordinator from declaring them silent with a 2 s timeout (without it, this
    round fails with "no answer within 2.0 s")."""
    inp = make_input(attacked_round(2, 6, 2, 200), seed=1)
    with PrivateFLAME(noise=False, search_steps=6, timeout_s=2.0, correlations="cheetah") as private:
        got = private.aggregate(inp)
    assert got.accepted.tolist() == [False] * 2 + [True] * 4
    assert max(v for k, v in got.info.items() if k.startswith("mpc_s_")) > 2.0  # a step did outlast the timeout


def test_servers_and_coordinator_must_agree_on_the_correlation_mode():
    """Servers started by hand in dealer mode, a coordinator asking for cheetah: a clear error, not a hang."""
    env = dict(os.environ, PYTHONPATH=str(Path(REPO_ROOT) / "src"))
    cmd = [sys.executable, "-m", "fedshield.mpc.server", "--timeout", "10", "--wait", "10"]
    a = subprocess.Popen(cmd + ["--role", "A", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env)
    b = None
    try:
        port_a = int(a.stdout.readline().split()[1])
        b = subprocess.Popen(cmd + ["--role", "B", "--listen", "127.0.0.1:0", "--peer", f"127.0.0.1:{port_a}"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        servers = {"A": f"127.0.0.1:{port_a}", "B": f"127.0.0.1:{int(b.stdout.readline().split()[1])}"}
        with PrivateFLAME(launch=False, servers=servers, correlations="cheetah", timeout_s=10) as private:
            with pytest.raises(PrivateFlameError, match="runs with --correlations dealer, the coordinator asked for"):
                private.aggregate(make_input(attacked_round(3, 6, 2, 40)))
    finally:
        for proc in (a, b):
            if proc is not None:
                proc.kill()
                proc.wait()
