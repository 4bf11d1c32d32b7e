"""Private FLAME's servers under faults, and what a server receives: clear errors, no hang, no orphans."""

from __future__ import annotations

import os
import signal
import socket
import time

import numpy as np
import pytest
import torch
from scipy import stats

from fedshield.defenses.flame import FLAME
from fedshield.defenses.private_flame import PrivateFLAME
from fedshield.mpc.client import ShareError, encode_update, split_update
from fedshield.mpc.flame_protocol import FlameParams
from fedshield.mpc import session as session_module
from fedshield.mpc.session import PrivateFlameError, ServerPair
from proctools import pid_alive
from roundinput import make_input

os.environ.setdefault("OMP_NUM_THREADS", "1")


def updates(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=d) + 0.3 * rng.normal(size=(n, d))) * 0.01


# ------------------------------------------------------------------------------------------- what B sees


def test_shares_of_different_updates_are_indistinguishable_and_uniform():
    """Done-when 2: B's shares of two different fixed updates have the same (uniform) distribution."""
    d, trials = 64, 400
    first = encode_update(np.zeros(d), 16, 0, d)
    second = encode_update(np.linspace(-100, 100, d), 16, 1, d)
    rng = np.random.default_rng(0)
    seeds = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes() for _ in range(2 * trials)]
    s1 = np.concatenate([split_update(first, seeds[k]) for k in range(trials)])
    s2 = np.concatenate([split_update(second, seeds[trials + k]) for k in range(trials)])
    for s in (s1, s2):  # every byte uniform on 0..255
        counts = np.bincount(s.view(np.uint8), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-3
    # same distribution: two-sample KS on the top 32 bits, and on every one of the 64 bit positions
    assert stats.ks_2samp(s1 >> np.uint64(32), s2 >> np.uint64(32)).pvalue > 1e-3
    bits1 = ((s1[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).mean(axis=0)
    bits2 = ((s2[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).mean(axis=0)
    tol = 5 * 0.5 / np.sqrt(s1.size)
    assert np.abs(bits1 - 0.5).max() < tol and np.abs(bits2 - 0.5).max() < tol
    # and a share differs from the encoded update everywhere the PRG says so: it is not the update
    assert not np.array_equal(s2[:d], second)


def test_client_refuses_nan_and_out_of_range():
    with pytest.raises(ShareError, match="client 4: .*NaN"):
        encode_update(np.array([1.0, np.nan]), 16, 4, 2)
    with pytest.raises(ShareError, match="client 2: squared update norm"):
        encode_update(np.full(4, 1e4), 16, 2, 4)
    with pytest.raises(ShareError, match="client 1: squared norm of the local model"):
        encode_update(np.zeros(4), 16, 1, 4, model_tr=np.full(4, 1e4))


def test_out_of_range_update_is_not_shared_and_the_round_runs_without_it():
    """The client whose update fixed point cannot hold does not send it: the result is the round of the other
    five (same admitted set and model as the plaintext twin on them), and the metrics name client 13."""
    u = updates(6, 8)
    u[3] *= 1e6
    inp = make_input(u, client_ids=[10, 11, 12, 13, 14, 15])
    rest = make_input(np.delete(u, 3, axis=0), client_ids=[10, 11, 12, 14, 15])
    with PrivateFLAME(search_steps=4, noise=False, timeout_s=30) as private:
        got = private.aggregate(inp)
    twin = FLAME(clustering="dbscan", noise=False, search_steps=4).aggregate(rest)
    assert got.accepted.tolist() == np.insert(twin.accepted.numpy(), 3, False).tolist()
    assert (got.global_params.double() - twin.global_params.double()).abs().max().item() < 2.0 ** -15
    assert got.info["unshared"] == 1.0 and "client 13: squared update norm" in got.info["unshared_reason"]


def test_round_where_no_update_can_be_shared_is_refused():
    u = updates(4, 8) * 1e6
    g = torch.full((8,), 0.5)
    with PrivateFLAME(search_steps=4, timeout_s=30) as private:
        got = private.aggregate(make_input(u, g=g, client_ids=[5, 6, 7, 8]))
        assert private._pair is None  # no server was started for an empty round
    assert torch.equal(got.global_params, g) and not bool(got.accepted.any())
    assert got.info["refused"] == 1.0 and got.info["unshared"] == 4.0
    assert "no client's update can be shared" in got.info["refused_reason"] and "client 8:" in got.info["refused_reason"]


# ------------------------------------------------------------------------------------------- faults


def test_wrong_length_share_is_named():
    pair = ServerPair(timeout=30)
    try:
        u = updates(5, 12)
        with pytest.raises(PrivateFlameError, match=r"server B, step 'sharing'.*client 2's share has 11 values"):
            pair.run_round(u, np.zeros(12), 12, FlameParams(search_steps=4), seed=0,
                           bad_share=(2, np.zeros(11, dtype=np.uint64)))
        pids = list(pair.pids.values())
    finally:
        pair.close()
    assert pids == [] or not any(pid_alive(p) for p in pids)


def test_killed_server_gives_clear_error_within_timeout(monkeypatch):
    """Done-when 2: kill server B mid-round; the error names it and its step, well within the timeout.

    The kill happens at a fixed point of the protocol, not after a delay (a timer would race a fast round): while
    the coordinator is sending the last client's share, after both servers have received the round's header."""
    timeout = 30.0
    u = updates(10, 150_000)
    private = PrivateFLAME(search_steps=10, timeout_s=timeout, noise=False)
    inp = make_input(u)
    private.aggregate(inp)  # warm: both servers up
    pids = dict(private.server_pair.pids)
    real_split = session_module.split_update
    calls = []

    def split_then_kill_b(encoded, seed):
        calls.append(1)
        if len(calls) == u.shape[0]:  # the last client's share: the round is under way
            os.kill(pids["B"], signal.SIGKILL)
            deadline = time.monotonic() + 10
            while pid_alive(pids["B"]) and time.monotonic() < deadline:
                time.sleep(0.01)
        return real_split(encoded, seed)

    monkeypatch.setattr(session_module, "split_update", split_then_kill_b)
    t0 = time.monotonic()
    with pytest.raises(PrivateFlameError, match=r"server B") as err:
        private.aggregate(inp)
    elapsed = time.monotonic() - t0
    assert len(calls) == u.shape[0]
    assert elapsed < timeout
    assert "step" in str(err.value)
    private.close()
    assert not any(pid_alive(p) for p in pids.values())


def test_silent_server_times_out():
    u = updates(6, 32)
    private = PrivateFLAME(search_steps=4, timeout_s=2.0)
    inp = make_input(u)
    private.aggregate(inp)
    pids = dict(private.server_pair.pids)
    os.kill(pids["B"], signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        with pytest.raises(PrivateFlameError, match=r"(did not answer|no answer) within 2.0 s"):
            private.aggregate(inp)
    finally:
        private.close()
    assert time.monotonic() - t0 < 15
    assert not any(pid_alive(p) for p in pids.values())


def test_port_in_use_is_named():
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        private = PrivateFLAME(servers={"A": f"127.0.0.1:{port}", "B": "127.0.0.1:0"}, timeout_s=10)
        with pytest.raises(PrivateFlameError, match=rf"server A did not start.*127.0.0.1:{port}.*in use"):
            private.aggregate(make_input(updates(4, 8)))
        assert private._pair is None or private._pair.procs == {}
    finally:
        blocker.close()


def test_servers_started_by_hand_as_on_two_machines():
    """The two-machine recipe on loopback: start A and B by hand, connect with launch=False, shut them down."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "fedshield.mpc.server", "--timeout", "30", "--wait", "30"]
    a = subprocess.Popen(cmd + ["--role", "A", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, env=env)
    b = None
    try:
        port_a = int(a.stdout.readline().split()[1])
        b = subprocess.Popen(cmd + ["--role", "B", "--listen", "127.0.0.1:0", "--peer", f"127.0.0.1:{port_a}"],
                             stdout=subprocess.PIPE, env=env)
        port_b = int(b.stdout.readline().split()[1])
        servers = {"A": f"127.0.0.1:{port_a}", "B": f"127.0.0.1:{port_b}"}
        with PrivateFLAME(launch=False, servers=servers, search_steps=6, timeout_s=30) as private:
            agg = private.aggregate(make_input(updates(6, 40)))
            assert agg.accepted.sum() >= 4
        assert a.wait(timeout=10) == 0 and b.wait(timeout=10) == 0  # closed by the coordinator's shutdown
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_what_each_server_receives_in_a_real_round(monkeypatch):
    """Record every frame the coordinator sends in two real rounds with two different fixed updates: A gets only
    seeds and public values; B's shares of the two updates are uniform and identically distributed."""
    from fedshield.mpc import transport

    sent: list[tuple[str, str, np.ndarray | None]] = []
    original = transport.Channel.send

    def recording_send(self, header, array=None):
        sent.append((self.peer, header.get("t"), None if array is None else np.array(array, copy=True)))
        return original(self, header, array)

    monkeypatch.setattr(transport.Channel, "send", recording_send)
    n, d = 8, 1024
    fixed = [np.full((n, d), 0.01), np.tile(np.linspace(-0.05, 0.05, d), (n, 1))]
    shares_b = []
    with ServerPair(timeout=30) as pair:
        for k, u in enumerate(fixed):
            start = len(sent)
            pair.run_round(u, np.zeros(d), d, FlameParams(search_steps=4, noise=False), seed=k)
            frames = sent[start:]
            to_a = [(t, a) for peer, t, a in frames if peer == "server A"]
            assert {t for t, _ in to_a} == {"round", "g", "dealer_seed", "seeds"}
            assert all(a is None or a.size <= max(n * 32, d) for _, a in to_a)  # seeds and G only, no n·d share
            shares = [a for peer, t, a in frames if peer == "server B" and t == "share"]
            assert len(shares) == n and all(a.shape == (d,) for a in shares)
            shares_b.append(np.concatenate(shares))
    s1, s2 = shares_b
    for s in (s1, s2):
        assert stats.chisquare(np.bincount(s.view(np.uint8), minlength=256)).pvalue > 1e-3
    assert stats.ks_2samp(s1 >> np.uint64(11), s2 >> np.uint64(11)).pvalue > 1e-3


class _ReportingChannel:
    """A channel whose next frame is a server's error report (readable at once)."""

    def __init__(self, peer: str, report: str):
        self.sock, self._far = socket.socketpair()
        self._far.send(b"x")
        self.peer, self.report = peer, report

    def recv(self):
        from fedshield.mpc.transport import ChannelError

        raise ChannelError(f"{self.peer} reported: {self.report}")


def test_the_root_cause_is_named_whichever_server_is_read_first():
    """Both servers fail when one does; the one that only lost its peer must not hide the peer's reason."""
    from fedshield.mpc.transport import ChannelError

    root = "server B, step 'sharing': ValueError: client 2's share has 11 values of uint64, expected 12 uint64"
    echo = "server A, step 'cosine': ChannelError: server B closed the connection while we waited for 'gram_e'"
    pair = object.__new__(ServerPair)
    pair.procs = {}
    last = {"A": "cosine", "B": "sharing"}
    pair.ch = {"A": _ReportingChannel("server A", echo), "B": _ReportingChannel("server B", root)}
    assert pair._root_cause("A", last, ChannelError(f"server A reported: {echo}")).startswith(root)  # A read first
    assert pair._root_cause("B", last, ChannelError(f"server B reported: {root}")).startswith(root)  # B read first
    assert pair._reported_error().startswith(root)  # after a failed send: both read, the root cause wins
    pair.ch["B"] = _ReportingChannel("server B", "server B, step 'cosine': ChannelError: server A closed it")
    assert pair._root_cause("A", last, ChannelError(f"server A reported: {echo}")).startswith(echo)  # no better one
