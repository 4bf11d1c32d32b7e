"""The coordinator's side: start (or reach) the two servers, play the clients and the dealer, run rounds.

:class:`ServerPair` launches ``python -m fedshield.mpc.server`` twice on loopback (or connects to servers
started elsewhere), keeps them across rounds, and stops them by PID on :meth:`close`, at interpreter exit, or on
any error. For one round it sends each server its public inputs and its shares (A: one seed per client, B: the
other share), serves B's dealer requests from a thread, waits for both results with a timeout, and returns the
revealed aggregate. An error names the server and the protocol step it was in.

With ``correlations="cheetah"`` the coordinator plays no dealer: the servers run in SPU's virtualenv
(:func:`.cheetah.spu_python`) and compute the correlations between themselves (:mod:`.cheetah`). The coordinator
then sends A only A's correlation seed and B only B's (drawn from the round's seed, for reproducible runs; it
never combines them, and with ``corr_seeds_from_os`` it sends none and each server draws its own).
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..core.errors import FedshieldError
from .cheetah import SPU_SETUP_COMMAND, spu_python
from .client import encode_update, split_update
from .dealer import Dealer
from .flame_protocol import COEF_FRAC, FlameParams
from .prg import SEED_BYTES
from .transport import Channel, ChannelError, connect, parse_address

__all__ = ["ServerPair", "PrivateFlameError", "RoundResult", "REPO_ROOT"]

# the checkout this package runs from (src/fedshield/mpc/session.py), where `make spu` puts .venv-spu
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


class PrivateFlameError(FedshieldError, RuntimeError):
    """A server failed, died, or did not answer; the message names it and the step (the CLI prints it as one
    line; a ``FedshieldError``, hence a ``ValueError``, and still a ``RuntimeError`` for older callers)."""


@dataclass
class RoundResult:
    update: np.ndarray  # (d,) float64: the revealed Σ a_i u_i (+ noise), in the caller's column order
    mask: np.ndarray | None  # (n,) bool admitted mask, if revealed
    seconds: dict[str, float] = field(default_factory=dict)  # per step (server A's clock) plus "sharing"
    bytes_sent: dict[str, int] = field(default_factory=dict)  # per party
    exchanges: int = 0
    # correlations="cheetah": per server (suffix _A, _B) the wall and CPU seconds spent in SPU, the bytes SPU's link
    # sent and the number of SPU runs; spu_setup_seconds: the link and runtime set-up (first round only)
    correlations: dict[str, float] = field(default_factory=dict)


class ServerPair:
    """Two Private FLAME servers and the channels to them.

    ``addresses``: {"A": "host:port", "B": "host:port"}; with ``launch`` (default) the servers are started here
    listening on those addresses (port 0: a free port); otherwise they must already run there (B started with
    ``--peer`` = A's address). ``correlations``: ``"dealer"`` (this process is the trusted dealer) or
    ``"cheetah"`` (no dealer; the servers compute the correlations under SPU's CHEETAH protocol).
    """

    def __init__(self, addresses: dict[str, str] | None = None, launch: bool = True, timeout: float = 300.0,
                 startup_timeout: float = 60.0, correlations: str = "dealer"):
        if correlations not in ("dealer", "cheetah"):
            raise ValueError(f"correlations must be 'dealer' or 'cheetah', got {correlations!r}")
        self.correlations = correlations
        self.addresses = dict(addresses or {"A": "127.0.0.1:0", "B": "127.0.0.1:0"})
        for role in ("A", "B"):
            if role not in self.addresses:
                raise ValueError(f"servers: missing the address of server {role}")
            parse_address(self.addresses[role])
        self.launch = launch
        self.timeout = float(timeout)
        self.startup_timeout = float(startup_timeout)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Any] = {}
        self.ch: dict[str, Channel] = {}
        self.dealer_ch: Channel | None = None
        self._expects_mask = True
        atexit.register(self.close)

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def pids(self) -> dict[str, int]:
        return {r: p.pid for r, p in self.procs.items()}

    def _spawn(self, role: str, listen: str, peer: str | None) -> str:
        python = sys.executable
        if self.correlations == "cheetah":
            python = spu_python(REPO_ROOT)
            if not os.path.exists(python):
                raise PrivateFlameError(
                    f"server {role} did not start (step 'start'): correlations 'cheetah' runs the servers in "
                    f"SecretFlow SPU's virtualenv, and {python} does not exist; create it with "
                    f"`{SPU_SETUP_COMMAND}` in {REPO_ROOT} (or set FEDSHIELD_SPU_PYTHON)")
        cmd = [python, "-m", "fedshield.mpc.server", "--role", role, "--listen", listen,
               "--timeout", str(self.timeout), "--wait", str(self.startup_timeout),
               "--correlations", self.correlations]
        if peer:
            cmd += ["--peer", peer]
        env = dict(os.environ)
        # Both servers (and the coordinator's dealer) share this machine: each gets an equal share of the cores for
        # its BLAS/OpenMP threads. Left to themselves, two processes with a spinning thread per core oversubscribe
        # the machine: on 2 cores a round with n = 100, d = 431,080 took 49.9 s instead of 9.0 s
        # (docs/private_flame.md). Servers started by hand on their own machines keep the default.
        threads = str(max(1, (os.cpu_count() or 2) // 2))
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, threads)
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        log = tempfile.TemporaryFile()
        self.logs[role] = log
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
        self.procs[role] = proc
        ready, _, _ = select.select([proc.stdout], [], [], self.startup_timeout)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("READY "):
            detail = line[6:] if line.startswith("ERROR ") else (line or self._log_tail(role) or "no answer")
            raise PrivateFlameError(f"server {role} did not start (step 'start'): {detail}")
        host = parse_address(listen)[0]
        return f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{line.split()[1]}"

    def _log_tail(self, role: str) -> str:
        log = self.logs.get(role)
        if log is None:
            return ""
        log.seek(0)
        return log.read()[-2000:].decode(errors="replace").strip()

    def start(self) -> None:
        if self.ch:
            return
        try:
            if self.launch:
                addr_a = self._spawn("A", self.addresses["A"], None)
                addr_b = self._spawn("B", self.addresses["B"], addr_a)
            else:
                addr_a, addr_b = self.addresses["A"], self.addresses["B"]
            for role, addr in (("A", addr_a), ("B", addr_b)):
                self.ch[role] = self._connect(role, addr, {"as": "coordinator"})
            if self.correlations == "dealer":
                self.dealer_ch = self._connect("B", addr_b, {"as": "dealer"})
        except BaseException:
            self.close()
            raise

    def _connect(self, role: str, addr: str, hello: dict) -> Channel:
        try:
            return connect(addr, f"server {role}", self.timeout, hello)
        except ChannelError as exc:
            raise PrivateFlameError(f"server {role} (step 'start'): {exc}") from None

    def close(self) -> None:
        """Stop both servers (shutdown message, then SIGKILL by PID if needed) and close every channel."""
        for ch in list(self.ch.values()):
            try:
                ch.set_timeout(1.0)
                ch.send({"t": "shutdown"})
            except (ChannelError, OSError):
                pass
        for ch in [*self.ch.values(), *([self.dealer_ch] if self.dealer_ch else [])]:
            ch.close()
        self.ch, self.dealer_ch = {}, None
        for role, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        self.procs = {}
        for log in self.logs.values():
            log.close()
        self.logs = {}

    def __enter__(self) -> "ServerPair":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ a round

    def run_round(
        self,
        updates: np.ndarray,
        global_tr: np.ndarray,
        d_tr: int,
        params: FlameParams,
        seed: int,
        bad_share: tuple[int, np.ndarray] | None = None,
        noise_from_os: bool = False,
        corr_seeds_from_os: bool = False,
    ) -> RoundResult:
        """One Private FLAME round. ``updates`` (n, d) float, trainable columns first; ``global_tr`` (d_tr,).

        ``seed`` makes every random draw of the round reproducible (client seeds, dealer seeds, noise seeds);
        with ``noise_from_os`` each server seeds its noise from its own OS entropy instead, so that nobody (not
        even this coordinator) can recompute the noise, at the price of run-to-run reproducibility. With
        ``corr_seeds_from_os`` (cheetah only) each server draws its correlation seed from its OS entropy too.
        ``bad_share`` (client index, array) replaces one share sent to B (fault-injection for tests only).
        """
        self.start()
        n, d = updates.shape
        rng = np.random.default_rng(seed)
        client_seeds = rng.integers(0, 256, (n, SEED_BYTES), dtype=np.uint8)
        seed_a = rng.integers(0, 256, SEED_BYTES, dtype=np.uint8)
        seed_b = rng.integers(0, 256, SEED_BYTES, dtype=np.uint8)
        noise_seed = int(rng.integers(0, 2**62))
        g = np.ascontiguousarray(global_tr, dtype=np.float64)
        model_tr = g if params.cluster_on == "models" else None
        encoded = [encode_update(updates[i], params.frac_bits, i, d_tr, model_tr) for i in range(n)]

        self._expects_mask = params.reveal_admitted
        cheetah = self.correlations == "cheetah"
        channels = {"clients_to_A": self.ch["A"], "clients_to_B": self.ch["B"]}
        if not cheetah:
            channels["dealer_to_B"] = self.dealer_ch
        bytes_before = {k: ch.bytes_sent for k, ch in channels.items()}
        dealer = dealer_thread = None
        if not cheetah:
            dealer = Dealer(seed_a.tobytes(), seed_b.tobytes(), self.dealer_ch)
            dealer_thread = dealer.start()
        header = {"t": "round", "n": n, "d": d, "d_tr": d_tr, "params": asdict(params),
                  "correlations": self.correlations, "noise_seed": None if noise_from_os else noise_seed,
                  "corr_seed_from_os": cheetah and corr_seeds_from_os}
        last_step = {"A": "sharing", "B": "sharing"}
        t0 = time.time()
        try:
            for role in ("A", "B"):
                self.ch[role].send(header)
                self.ch[role].send({"t": "g"}, g)
            seed_msg = "corr_seed" if cheetah else "dealer_seed"  # cheetah: each server gets only its own seed
            if not header["corr_seed_from_os"]:
                self.ch["A"].send({"t": seed_msg}, seed_a)
            self.ch["A"].send({"t": "seeds"}, client_seeds)
            if not header["corr_seed_from_os"]:
                self.ch["B"].send({"t": seed_msg}, seed_b)
            for i in range(n):
                share = split_update(encoded[i], client_seeds[i].tobytes())
                if bad_share is not None and bad_share[0] == i:
                    share = bad_share[1]
                self.ch["B"].send({"t": "share"}, share)
        except ChannelError as exc:
            self._fail(self._reported_error() or f"{exc} (step 'sharing')")
        results = self._collect(last_step)
        if dealer is not None:
            dealer_thread.join(timeout=self.timeout)
            if dealer.error is not None:
                self._fail(f"the dealer failed: {dealer.error}")
        (stats_a, out_a, mask_a), (stats_b, out_b, _) = results["A"], results["B"]
        total = (out_a + out_b).view(np.int64).astype(np.float64) / float(2 ** (COEF_FRAC + params.frac_bits))
        seconds = _step_seconds(t0, stats_a["marks"], stats_b["marks"])
        sent = {"A_to_B": int(stats_a["peer_bytes"]), "B_to_A": int(stats_b["peer_bytes"]),
                **{k: ch.bytes_sent - bytes_before[k] for k, ch in channels.items()}}
        corr: dict[str, float] = {}
        if cheetah:
            for role, st in (("A", stats_a), ("B", stats_b)):
                corr.update({f"{k}_{role}": float(st[k]) for k in ("spu_seconds", "spu_cpu_seconds", "spu_bytes",
                                                                    "spu_runs")})
            corr["spu_setup_seconds"] = max(float(stats_a["spu_setup_seconds"]), float(stats_b["spu_setup_seconds"]))
            sent.update(spu_A_to_B=int(stats_a["spu_bytes"]), spu_B_to_A=int(stats_b["spu_bytes"]))
        mask = None if mask_a is None else mask_a.astype(bool)
        return RoundResult(total, mask, seconds, sent, int(stats_a["exchanges"]), corr)

    def _collect(self, last_step: dict[str, str]) -> dict[str, tuple[dict, np.ndarray, np.ndarray | None]]:
        """Wait for both servers' results, following their step reports; fail on error, EOF or silence."""
        pending = {"A", "B"}
        results: dict[str, list] = {"A": [None, None, None], "B": [None, None, None]}
        heard = {r: time.monotonic() for r in pending}  # a server silent for longer than the timeout has failed
        while pending:
            socks = {self.ch[r].sock: r for r in pending}
            wait = min(heard[r] for r in pending) + self.timeout + 2.0 - time.monotonic()  # a server reports first
            ready, _, _ = select.select(list(socks), [], [], max(wait, 0.0))
            if not ready:
                silent = [r for r in sorted(pending) if time.monotonic() - heard[r] > self.timeout]
                names = ", ".join(f"server {r} (step {last_step[r]!r})" for r in silent)
                self._fail(f"no answer within {self.timeout} s from {names}")
            for sock in ready:
                role = socks[sock]
                heard[role] = time.monotonic()
                try:
                    header, array = self.ch[role].recv()
                except ChannelError as exc:
                    self._fail(self._root_cause(role, last_step, exc))
                kind = header.get("t")  # "alive": a cheetah server's heartbeat during long SPU runs
                if kind == "step":
                    last_step[role] = str(header.get("name"))
                elif kind == "result":
                    results[role][0], results[role][1] = header["stats"], array
                    if not self._expects_mask:
                        pending.discard(role)
                elif kind == "mask":
                    results[role][2] = array
                    pending.discard(role)
        return {r: tuple(v) for r, v in results.items()}  # type: ignore[misc]

    def _reported_error(self, only: str | None = None) -> str | None:
        """After a failure: the error a server (``only`` that one) reported before it exited (its last frame), if
        there is one; of two, the one that is not a consequence of the other."""
        deadline = time.monotonic() + 2.0
        reports = []
        for role, ch in self.ch.items():
            if only is not None and role != only:
                continue
            try:
                while time.monotonic() < deadline and select.select([ch.sock], [], [], 0.5)[0]:
                    ch.recv()  # step reports, heartbeats; an "error" frame raises
            except ChannelError as exc:
                report = _report_of(exc)
                if report is not None:
                    reports.append(report)
        reports.sort(key=_is_consequence)  # a root cause first
        return reports[0] if reports else None

    def _root_cause(self, role: str, last_step: dict[str, str], exc: ChannelError) -> str:
        """The message for a server's failure. When it only lost its peer (its report is itself a ChannelError, or
        its connection broke), the peer's own report, if it sends one within 2 s, names the cause: both servers
        fail together, and which socket is read first is a race."""
        other = "B" if role == "A" else "A"
        if _is_consequence(_report_of(exc)):
            peer = self._reported_error(only=other)
            if peer is not None and not _is_consequence(peer):
                return f"{peer} (the other server, {role}, was at step {last_step[role]!r})"
        return self._explain(role, last_step, exc)

    def _explain(self, role: str, last_step: dict[str, str], exc: ChannelError) -> str:
        msg = str(exc)
        if "reported:" in msg:
            root = msg.split("reported:", 1)[1].strip()
            other = "B" if role == "A" else "A"
            return f"{root} (the other server, {other}, was at step {last_step[other]!r})"
        proc = self.procs.get(role)
        dead = proc is not None and proc.poll() is not None
        state = f" (process {proc.pid} exited with code {proc.returncode})" if dead else ""
        return f"server {role} failed during step {last_step[role]!r}: {msg}{state}"

    def _fail(self, message: str) -> None:
        self.close()
        raise PrivateFlameError(f"private_flame: {message}")


def _report_of(exc: ChannelError) -> str | None:
    """The error text a server sent in an "error" frame, or None when the channel itself failed."""
    msg = str(exc)
    return msg.split("reported:", 1)[1].strip() if "reported:" in msg else None


def _is_consequence(report: str | None) -> bool:
    """Whether a failure only follows from the peer's: a broken channel, or a report of one ("ChannelError: server
    B closed the connection ...")."""
    return report is None or "ChannelError" in report


def _step_seconds(start: float, marks_a: list, marks_b: list) -> dict[str, float]:
    """Wall seconds per step: a step ends when the later of the two servers enters the next one (the servers
    synchronise on every exchange); "sharing" runs from the round's start until both begin "cosine"."""
    later = {}
    for name, t in [*marks_a, *marks_b]:
        later[name] = max(later.get(name, t), t)
    names = [name for name, _ in marks_a]
    bounds = [("sharing", start)] + [(nm, later[nm]) for nm in names if nm != "sharing"]
    return {bounds[k][0]: bounds[k + 1][1] - bounds[k][1] for k in range(len(bounds) - 1)}
