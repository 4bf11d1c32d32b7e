"""A Private FLAME server process (A or B).

    python -m fedshield.mpc.server --role A --listen 0.0.0.0:7001
    python -m fedshield.mpc.server --role B --listen 0.0.0.0:7002 --peer hostA:7001

The server listens on ``--listen`` (port 0: any free port), prints ``READY <port>`` on stdout, and waits for its
connections: the coordinator (clients + round control) on both, the dealer on B, and server B dials server A
(``--peer``). Then it runs rounds until the coordinator says ``shutdown`` or disconnects. A server receives only
its own shares (A: the clients' 32-byte seeds; B: enc(u_i) − PRG(s_i)), the dealer's seed (A) or corrections
(B), and public values (G, sizes, parameters). Any failure is reported to the coordinator as an ``error``
frame naming the server and the step, after which the process exits.

With ``--correlations cheetah`` there is no dealer: each server gets only its own correlation seed (or draws it
from its OS entropy) and the two compute B's corrections together under SPU's CHEETAH protocol
(:mod:`.cheetah`) over a second TCP link, SPU's own, on ``--spu-listen`` (default: the host of ``--listen``, any
free port; the servers tell each other the port over their channel). This mode needs SecretFlow SPU, i.e. the
interpreter of ``.venv-spu`` (``make spu``); SPU's log (the process's stdout after ``READY``) goes to a
temporary file, read for SPU's byte counts.
"""

from __future__ import annotations

import argparse
import atexit
import os
import socket
import sys
import tempfile
import threading
import time

import numpy as np

from .cheetah import CheetahEngine, CheetahSource, brpc_link
from .flame_protocol import FlameParams, run_flame
from .party import DealerLink, Party, SeededSource
from .prg import PRG, SEED_BYTES
from .ring import encode
from .transport import Channel, ChannelError, connect, parse_address

__all__ = ["main", "Server"]


class Server:
    def __init__(self, role: str, listen: str, peer: str | None, timeout: float, wait: float,
                 correlations: str = "dealer", spu_listen: str | None = None):
        self.role = role
        self.listen_addr = listen
        self.peer_addr = peer
        self.timeout = timeout
        self.wait = wait
        self.correlations = correlations
        self.spu_listen = spu_listen or f"{parse_address(listen)[0]}:0"
        self.spu_log: str | None = None
        self.engine: CheetahEngine | None = None
        self.step = "start"
        self.coord: Channel | None = None
        self.peer: Channel | None = None
        self.dealer: Channel | None = None

    # ------------------------------------------------------------------------------------------ set-up

    def bind(self) -> socket.socket:
        host, port = parse_address(self.listen_addr)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"server {self.role} cannot listen on {self.listen_addr}: {exc.strerror or exc}") from None
        sock.listen(4)
        return sock

    def connect_all(self, lsock: socket.socket) -> None:
        if self.role == "B":
            deadline = time.monotonic() + self.wait
            while True:
                try:
                    self.peer = connect(self.peer_addr, "server A", self.timeout, {"as": "peer", "role": "B"})
                    break
                except ChannelError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        lsock.settimeout(self.wait)
        while self._missing():
            try:
                conn, _ = lsock.accept()
            except socket.timeout:
                raise ChannelError(f"no connection from {' and '.join(self._missing())} within {self.wait} s") from None
            ch = Channel(conn, "incoming", self.timeout)
            try:
                hello, _ = ch.recv("hello")
            except ChannelError:
                ch.close()
                continue
            kind = hello.get("as")
            if kind == "coordinator":
                self.coord, ch.peer = ch, "the coordinator"
            elif kind == "peer" and self.role == "A":
                self.peer, ch.peer = ch, "server B"
            elif kind == "dealer" and self.role == "B":
                self.dealer, ch.peer = ch, "the dealer"
            else:
                ch.close()
        lsock.close()

    def _missing(self) -> list[str]:
        wanted = [("the coordinator", self.coord)]
        if self.role == "A":
            wanted.append(("server B", self.peer))
        elif self.correlations == "dealer":
            wanted.append(("the dealer", self.dealer))
        return [name for name, ch in wanted if ch is None]

    def start_engine(self) -> None:
        """SPU's link to the other server and the CHEETAH runtime (once per process: CHEETAH's OT set-up is
        paid once). The servers swap their SPU ports over their channel; each dials the host it already knows."""
        host, port = parse_address(self.spu_listen)
        if port == 0:
            with socket.socket() as probe:
                probe.bind((host, 0))
                port = probe.getsockname()[1]
        self.peer.send({"t": "spu_port", "port": port})
        other = int(self.peer.recv("spu_port")[0]["port"])
        other_host = self.peer.sock.getpeername()[0]
        mine = f"{host}:{port}"
        theirs = f"{other_host}:{other}"
        addresses = [mine, theirs] if self.role == "A" else [theirs, mine]
        # SPU's own receive timeout is generous: one party can wait minutes for the other's HE product; a dead or
        # stopped server is caught by the coordinator (closed connection, or no heartbeat), which stops both
        link = brpc_link(0 if self.role == "A" else 1, addresses, self.timeout, max(self.timeout, 3600.0))
        self.engine = CheetahEngine(link, self.spu_log)

    # ------------------------------------------------------------------------------------------ rounds

    def notify(self, name: str) -> None:
        self.step = name
        self.times.append((name, time.time()))
        self.coord.send({"t": "step", "name": name})

    def run_round(self, header: dict) -> None:
        """One round; in cheetah mode with a heartbeat to the coordinator, since one SPU run (the Gram
        correlation at lenet size: minutes) can last longer than the coordinator's silence timeout."""
        stop = threading.Event()
        if self.correlations == "cheetah":
            threading.Thread(target=self._heartbeat, args=(stop,), daemon=True).start()
        try:
            self._run_round(header)
        finally:
            stop.set()

    def _heartbeat(self, stop: threading.Event) -> None:
        interval = max(0.5, min(10.0, self.timeout / 4))
        while not stop.wait(interval):
            try:
                self.coord.send({"t": "alive"})
            except ChannelError:
                return

    def _run_round(self, header: dict) -> None:
        self.times: list[tuple[str, float]] = []
        peer_bytes_before = self.peer.bytes_sent
        n, d, d_tr = int(header["n"]), int(header["d"]), int(header["d_tr"])
        prm = FlameParams(**header["params"])
        self.notify("sharing")
        coord = self.coord
        g = coord.recv_array("g")
        if g.shape != (d_tr,) or g.dtype != np.float64 or not np.isfinite(g).all():
            raise ValueError(f"the global model has shape {g.shape}, expected ({d_tr},) finite float64")
        cheetah = self.correlations == "cheetah"
        if header.get("correlations", "dealer") != self.correlations:
            raise ValueError(f"this server runs with --correlations {self.correlations}, the coordinator asked for "
                             f"{header.get('correlations', 'dealer')!r}")
        if not cheetah:
            seed = coord.recv_array("dealer_seed").tobytes()
        elif header.get("corr_seed_from_os"):
            seed = os.urandom(SEED_BYTES)  # known to this server only
        else:
            seed = coord.recv_array("corr_seed").tobytes()
        setup = 0.0
        if cheetah:
            t = time.perf_counter()
            if self.engine is None:
                self.start_engine()
                setup = time.perf_counter() - t
            corr = CheetahSource(self.role, seed, self.peer, self.engine)
            engine_before = self.engine.stats()
        U = np.empty((n, d), dtype=np.uint64)
        if self.role == "A":
            if not cheetah:
                corr = SeededSource(seed)
            seeds = coord.recv_array("seeds")
            if seeds.shape != (n, SEED_BYTES):
                raise ValueError(f"received {seeds.shape} client seeds, expected ({n}, {SEED_BYTES})")
            for i in range(n):
                U[i] = PRG(seeds[i].tobytes()).u64(d)
        else:
            if not cheetah:
                corr = DealerLink(seed, self.dealer)
                corr.prefetch("gram", n=n, d=d, d_tr=d_tr)
            for i in range(n):
                share = coord.recv_array("share")
                if share.dtype != np.uint64 or share.shape != (d,):
                    raise ValueError(f"client {i}'s share has {share.size} values of {share.dtype}, expected {d} uint64")
                U[i] = share
        party = Party(self.role, self.peer, corr)
        normal = None
        if prm.noise:
            seed = header.get("noise_seed")  # None: this server's own OS entropy (nobody else can recompute it)
            rng = np.random.default_rng(None if seed is None else [int(seed), 1 if self.role == "A" else 2])
            normal = rng.standard_normal(d_tr)
        res = run_flame(party, U, encode(g, prm.frac_bits), d_tr, prm, normal, self.notify)
        self.notify("done")
        stats = {"marks": self.times, "peer_bytes": self.peer.bytes_sent - peer_bytes_before,
                 "exchanges": party.rounds}
        if cheetah:
            now = self.engine.stats()
            stats.update({k: now[k] - engine_before[k] for k in now}, spu_setup_seconds=setup)
        coord.send({"t": "result", "stats": stats}, res.out)
        if res.mask is not None:
            coord.send({"t": "mask"}, res.mask)
        if self.role == "B" and not cheetah:
            self.dealer.send({"t": "corr_end"})

    def serve(self) -> int:
        try:
            lsock = self.bind()
        except OSError as exc:
            print(f"ERROR {exc}", flush=True)
            return 3
        print(f"READY {lsock.getsockname()[1]}", flush=True)
        if self.correlations == "cheetah":
            self.redirect_stdout()
        try:
            self.connect_all(lsock)
        except ChannelError as exc:
            print(f"server {self.role}: {exc}", file=sys.stderr, flush=True)
            return 4
        while True:
            self.coord.set_timeout(None)  # idle between rounds: clients train
            try:
                header, _ = self.coord.recv()
            except ChannelError:
                return 0  # the coordinator went away: nothing left to do
            if header.get("t") == "shutdown":
                return 0
            if header.get("t") != "round":
                continue
            self.coord.set_timeout(self.timeout)
            try:
                self.run_round(header)
            except Exception as exc:  # reported, then the process ends
                msg = f"server {self.role}, step {self.step!r}: {type(exc).__name__}: {exc}"
                try:
                    self.coord.send({"t": "error", "message": msg})
                except ChannelError:
                    pass
                print(msg, file=sys.stderr, flush=True)
                return 1


    def redirect_stdout(self) -> None:
        """SPU logs to stdout, which nobody reads after READY (a full pipe would block the server): send it to
        a temporary file that :class:`CheetahEngine` reads for the byte counts and empties after each run."""
        fd, path = tempfile.mkstemp(prefix=f"fedshield-spu-{self.role}-", suffix=".log")
        os.close(fd)
        log = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(log, 1)
        os.close(log)
        if os.path.exists("/proc/self/fd/1"):  # Linux: no name left behind, even if the server is killed
            os.unlink(path)
            path = "/proc/self/fd/1"
        else:
            atexit.register(lambda: os.path.exists(path) and os.unlink(path))
        self.spu_log = path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fedshield.mpc.server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", required=True, choices=["A", "B"])
    ap.add_argument("--listen", default="127.0.0.1:0", help="host:port to listen on (port 0: any free port)")
    ap.add_argument("--peer", default=None, help="server A's host:port (role B only)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for any message within a round")
    ap.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the connections at start")
    ap.add_argument("--correlations", choices=["dealer", "cheetah"], default="dealer",
                    help="dealer: the coordinator's trusted dealer; cheetah: computed by the two servers under SPU")
    ap.add_argument("--spu-listen", default=None,
                    help="host:port of this server's SPU link (cheetah only; default: --listen's host, a free port)")
    args = ap.parse_args(argv)
    if args.role == "B" and not args.peer:
        ap.error("--peer (server A's host:port) is required for role B")
    if args.spu_listen:
        parse_address(args.spu_listen)
    return Server(args.role, args.listen, args.peer, args.timeout, args.wait, args.correlations,
                  args.spu_listen).serve()


if __name__ == "__main__":
    sys.exit(main())
