"""Dealer-free correlations: servers A and B compute the dealer's correction themselves, under SecretFlow SPU's
CHEETAH protocol (Huang et al., USENIX Security 2022: lattice HE for products, silent OT for Boolean gates).

Each correlation kind of :mod:`.correlations` is three functions: A's share ``share_a(prg_a)``, B's random part
``random_b(prg_b)`` and B's ``correction(sa, rb)``. With a dealer, one party knows both seeds and computes the
correction in the clear. Here A draws ``sa`` from its own seed and B draws ``rb`` from its own seed, both feed
them as private inputs to one SPU program that evaluates the same correction formula in Z_2^64 (``uint64``,
field FM64: ``+ − *``, ``^ &``, logical ``>>`` and matrix products wrap exactly as numpy's do), and the result is
revealed to B only: each server fetches its own additive (or XOR) share of the output, A sends its share to B
over their channel, and B adds the two. Nobody ever holds both seeds, so there is no dealer to trust: the
threat model is the two semi-honest, non-colluding servers alone. The correlations, and so every online message
and the result, are bit for bit those of the dealer mode with the same seeds.

A private input x of one server enters SPU as the sharing (x − m, m) (XOR-shared, (x ^ m, m), for the inputs
that are only XORed and ANDed): the owner's share is x − m, the other server's is m, drawn from a PRG whose seed
A draws afresh and sends to B. m is independent of x, so neither share tells the other server anything, and no
input is sent. The shares are written in SPU's wire format (``ValueMetaProto``/``ValueChunkProto``, a few
protobuf fields, encoded by :func:`encode_share` and checked against SPU's own ``Io`` in the tests).

SPU 0.9.5 needs Python < 3.12 and numpy < 2 (its own virtualenv, ``make spu``); this module imports spu and jax
only inside the functions that need them, so the rest of the package imports it anywhere. Compiled SPU programs
are cached per (kind, sizes); the SPU runtime (and CHEETAH's one-off OT set-up) lives as long as the server.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Callable

import numpy as np

from .correlations import KINDS, Shares, assemble_b
from .prg import PRG
from .transport import Channel

__all__ = ["CheetahEngine", "CheetahSource", "brpc_link", "memory_links", "correction_program", "encode_share",
           "decode_share", "spu_python", "SPU_SETUP_COMMAND"]

SPU_SETUP_COMMAND = "make spu"
_DT_U64 = 9  # spu.DataType.DT_U64
_VIS_SECRET = 1
_CHUNK = 128 << 20  # SPU's default share_max_chunk_size
_LINK_BYTES = re.compile(rb"Link details: total send bytes (\d+)")


def spu_python(repo_root: str) -> str:
    """The interpreter of SPU's virtualenv: ``$FEDSHIELD_SPU_PYTHON`` or ``<repo>/.venv-spu/bin/python``."""
    return os.environ.get("FEDSHIELD_SPU_PYTHON") or os.path.join(repo_root, ".venv-spu", "bin", "python")


# ------------------------------------------------------------------------------------------ the programs
# The corrections of .correlations, written with operators that both numpy and jax (tracing for SPU) understand;
# the tests check them bit for bit against the dealer's functions.


def _mul(sa: Shares, rb: Shares, p: dict) -> Shares:
    return {"c": (sa["a"] + rb["a"]) * (sa["b"] + rb["b"]) - sa["c"]}


def _matmul(sa: Shares, rb: Shares, p: dict) -> Shares:
    return {"z": (sa["x"] + rb["x"]) @ (sa["y"] + rb["y"]) - sa["z"]}


def _cmp(sa: Shares, rb: Shares, p: dict) -> Shares:
    r = sa["r"] + rb["r"]
    out = {"rb": r ^ sa["rb"]}  # the one arithmetic-to-Boolean conversion (SPU's adder circuit)
    if p["shift"]:  # r = (r ^ rb_A) ^ rb_A: shift the Boolean form (free) instead of converting r again
        out["rs"] = ((out["rb"] ^ sa["rb"]) >> np.uint64(p["shift"])) - sa["rs"]
    out["tc"] = ((sa["ta"] ^ rb["ta"]) & (sa["tb"] ^ rb["tb"])) ^ sa["tc"]
    x, y = sa["px"], rb["px"]  # bits: x ^ y = x + y − 2xy, one product instead of two bit decompositions
    out["pa"] = x + y - np.uint64(2) * x * y - sa["pa"]
    return out


def _gram(sa: Shares, rb: Shares, p: dict) -> Shares:
    d_tr = p["d_tr"]
    k = sa["mask"][:, :d_tr] @ rb["mask"][:, :d_tr].T
    alpha_mask = (sa["alpha"] + rb["alpha"]) @ (sa["mask"] + rb["mask"])
    return {"cross": k + k.T - sa["cross"], "alpha_mask": alpha_mask - sa["alpha_mask"]}


def _svec(sa: Shares, rb: Shares, p: dict) -> Shares:
    return {"st": (sa["s"] + rb["s"]) * (sa["t"] + rb["t"]) - sa["st"]}


PROGRAMS: dict[str, Callable[[Shares, Shares, dict], Shares]] = {
    "mul": _mul, "matmul": _matmul, "cmp": _cmp, "gram": _gram, "svec": _svec,
}
# inputs that enter SPU XOR-shared (they are only XORed and ANDed): XOR with them is then free, where an additive
# input would first go through SPU's arithmetic-to-Boolean adder circuit (64 bits each)
BOOLEAN_INPUTS: dict[str, frozenset[str]] = {"cmp": frozenset({"rb", "ta", "tb", "tc"})}


def correction_program(kind: str, params: dict, names_a: list[str], names_b: list[str]) -> Callable:
    """``correction(sa, rb)`` of ``kind`` as a function of the flat inputs (A's arrays, then B's), returning the
    correction's arrays in a fixed order; traced with jax (uint64) for SPU, or run as is on numpy arrays."""
    prog = PROGRAMS[kind]

    def fn(*arrays):
        sa = dict(zip(names_a, arrays[: len(names_a)]))
        rb = dict(zip(names_b, arrays[len(names_a):]))
        out = prog(sa, rb, params)
        return [out[k] for k in sorted(out)]

    return fn


# ------------------------------------------------------------------------------------------ SPU's share format


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(num: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(num << 3) + _varint(payload)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _fields(buf: bytes) -> list[tuple[int, Any]]:
    """(field number, int or bytes) of one protobuf message (varint and length-delimited fields only)."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _read_varint(buf, pos)
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            val, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire} in an SPU share")
        out.append((num, val))
    return out


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, pos


def encode_share(values: np.ndarray, boolean: bool = False) -> tuple[bytes, list[bytes]]:
    """(meta, chunks) of this party's CHEETAH share ``values`` (uint64) of a secret uint64 array: an additive
    share (``cheetah.AShr<FM64>``) or, with ``boolean``, an XOR share of all 64 bits (``cheetah.BShr<FM64,64>``)."""
    values = np.ascontiguousarray(values, dtype=np.uint64)
    dims = b"".join(_varint(s) for s in values.shape)
    storage = b"cheetah.BShr<FM64,64>" if boolean else b"cheetah.AShr<FM64>"
    meta = _field(1, _DT_U64) + _field(3, _VIS_SECRET) + _field(4, _field(1, dims) if dims else b"") \
        + _field(5, storage)
    raw = values.tobytes()
    total = len(raw)
    chunks = [_field(1, total) + (_field(2, off) if off else b"") + _field(3, raw[off : off + _CHUNK])
              for off in range(0, max(total, 1), _CHUNK)]
    return meta, chunks


def decode_share(meta: bytes, chunks: list[bytes]) -> tuple[str, np.ndarray]:
    """(storage type, uint64 array) of one party's share of an output."""
    f = dict(_fields(meta))
    storage = f.get(5, b"").decode()
    shape_fields = _fields(f.get(4, b""))
    dims = [v for num, raw in shape_fields if num == 1
            for v in (_packed(raw) if isinstance(raw, (bytes, bytearray)) else [raw])]
    parts = []
    for chunk in chunks:
        c = dict(_fields(chunk))
        parts.append((c.get(2, 0), c.get(3, b"")))
    raw = b"".join(data for _, data in sorted(parts))
    if not storage.startswith(("cheetah.AShr<FM64>", "cheetah.BShr<FM64")):
        raise ValueError(f"unexpected SPU output storage type {storage!r}")
    return storage, np.frombuffer(raw, dtype=np.uint64).reshape(dims).copy()


def _packed(raw: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(raw):
        v, pos = _read_varint(raw, pos)
        out.append(v)
    return out


# ------------------------------------------------------------------------------------------ the engine


def brpc_link(rank: int, addresses: list[str], connect_timeout: float, recv_timeout: float):
    """SPU's TCP link (brpc) of party ``rank``; ``addresses[r]`` is party r's link address (A is party 0), and
    this party listens on its own. Waits up to ``connect_timeout`` seconds for the other party to be reachable and
    ``recv_timeout`` seconds for any one message."""
    import spu.libspu as libspu

    desc = libspu.link.Desc()
    for r, addr in enumerate(addresses):
        desc.add_party(f"p{r}", addr)
    desc.recv_timeout_ms = int(recv_timeout * 1000)
    desc.http_timeout_ms = int(recv_timeout * 1000)
    desc.connect_retry_times = max(1, int(connect_timeout))
    desc.connect_retry_interval_ms = 1000
    return libspu.link.create_brpc(desc, rank)


def memory_links(timeout: float = 600.0) -> tuple[Any, Any]:
    """Both parties' links in one process (SPU's in-memory link), for tests."""
    import spu.libspu as libspu

    desc = libspu.link.Desc()
    desc.recv_timeout_ms = int(timeout * 1000)
    for r in range(2):
        desc.add_party(f"p{r}", f"thread_{r}")
    return libspu.link.create_mem(desc, 0), libspu.link.create_mem(desc, 1)


class CheetahEngine:
    """One server's SPU runtime (CHEETAH, FM64) on ``link`` (party 0 is server A), with compiled programs cached
    per (kind, sizes). ``log_path`` is the file SPU's log (the process's stdout) goes to: with it SPU's HAL
    profiling is on and the "Link details" line it logs after each run gives the bytes this party sent."""

    def __init__(self, link, log_path: str | None = None):
        import spu.api as spu_api
        import spu.libspu as libspu

        self.rank = link.rank
        self.cfg = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.CHEETAH, field=libspu.FieldType.FM64)
        self.cfg.enable_hal_profile = log_path is not None
        self.link = link
        self.runtime = spu_api.Runtime(link, self.cfg)
        self._libspu = libspu
        self._cache: dict[tuple, Any] = {}
        self.log_path = log_path
        self.bytes_sent = 0
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.runs = 0

    def executable(self, kind: str, params: dict, shapes_a: dict[str, tuple], shapes_b: dict[str, tuple]):
        key = (kind, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items())))
        exe = self._cache.get(key)
        if exe is None:
            import jax
            import spu.utils.frontend as spu_fe

            jax.config.update("jax_enable_x64", True)  # trace in uint64 (jax's default would narrow to uint32)
            names_a, names_b = list(shapes_a), list(shapes_b)
            fn = correction_program(kind, params, names_a, names_b)
            examples = [np.zeros(s, np.uint64) for s in [*shapes_a.values(), *shapes_b.values()]]
            names = [f"a.{k}" for k in names_a] + [f"b.{k}" for k in names_b]
            vis = [self._libspu.Visibility.VIS_SECRET] * len(names)
            exe, _ = spu_fe.compile(spu_fe.Kind.JAX, fn, examples, {}, names, vis,
                                    lambda outs: [f"out{i}" for i in range(len(outs))])
            self._cache[key] = exe
        return exe

    def run(self, kind: str, params: dict, own: Shares, shapes_a: dict[str, tuple],
            shapes_b: dict[str, tuple], masks: PRG) -> list[tuple[str, np.ndarray]]:
        """Run the correction of ``kind`` with this party's inputs ``own``; return this party's (storage type,
        share) of each output, in the program's order.

        An input x of party p enters as the sharing (x − m, m) (XOR: (x ^ m, m)): p's share is x − m, the other's
        is m, where m is drawn from ``masks``, a PRG both parties hold (its seed is not a secret of either; A
        draws it and sends it to B). m is independent of x, so neither share tells the other party anything, and
        nothing needs to be sent to input x. (Zero shares, m = 0, would do as well but make CHEETAH's HE
        product refuse a "transparent" ciphertext.)"""
        exe = self.executable(kind, params, shapes_a, shapes_b)
        mine = "a" if self.rank == 0 else "b"
        shapes = {"a": shapes_a, "b": shapes_b}
        boolean = BOOLEAN_INPUTS.get(kind, frozenset())
        rt, libspu = self.runtime, self._libspu
        t, c = time.perf_counter(), time.process_time()
        for side in ("a", "b"):
            for name, shape in shapes[side].items():
                m = masks.u64(shape)
                xor = name in boolean
                if side == mine:
                    m = own[name] ^ m if xor else own[name] - m
                share = libspu.Share()
                share.meta, share.share_chunks = encode_share(m, xor)
                rt.set_var(f"{side}.{name}", share)
        rt.run(exe)
        outs = []
        for name in exe.output_names:
            s = rt.get_var(name)
            outs.append(decode_share(s.meta, list(s.share_chunks)))
        for name in [*exe.input_names, *exe.output_names]:
            rt.del_var(name)
        self.seconds += time.perf_counter() - t
        self.cpu_seconds += time.process_time() - c
        self.runs += 1
        self._count_bytes()
        return outs

    def _count_bytes(self) -> None:
        """Add the bytes SPU reports sending in this run (from its log), then empty the log file."""
        if self.log_path is None:
            return
        with open(self.log_path, "rb+") as log:
            self.bytes_sent += sum(int(m) for m in _LINK_BYTES.findall(log.read()))
            log.truncate(0)

    def stats(self) -> dict[str, float]:
        return {"spu_seconds": self.seconds, "spu_cpu_seconds": self.cpu_seconds, "spu_bytes": self.bytes_sent,
                "spu_runs": self.runs}


class CheetahSource:
    """A server's correlation source without a dealer: its share part from its own seed, B's correction computed
    jointly under CHEETAH and revealed to B only (A sends B its share of the output over ``peer``)."""

    def __init__(self, role: str, seed: bytes, peer: Channel, engine: CheetahEngine):
        self.role = role
        self.prg = PRG(seed)
        self.peer = peer
        self.engine = engine
        if role == "A":  # the input masks' seed: fresh, known to both servers, secret of neither
            mask_seed = os.urandom(32)
            peer.send({"t": "spu_masks"}, np.frombuffer(mask_seed, dtype=np.uint8))
        else:
            mask_seed = peer.recv_array("spu_masks").tobytes()
        self.masks = PRG(mask_seed)
        self._shapes: dict[str, tuple[dict, dict, list[str]]] = {}

    def prefetch(self, kind: str, **params) -> None:
        """Nothing ahead of time: both servers compute each correlation when the program asks for it."""

    def _layout(self, kind: str, params: dict) -> tuple[dict[str, tuple], dict[str, tuple], list[str]]:
        """Shapes of A's and B's inputs and the correction's names in the program's (sorted) order, from the
        numpy functions on throwaway randomness (once per kind and sizes)."""
        key = f"{kind} {sorted(params.items())}"
        if key not in self._shapes:
            share_a, random_b, correction = KINDS[kind]
            blank = PRG(bytes(32))
            sa, rb = share_a(blank, **params), random_b(blank, **params)
            names = sorted(correction(sa, rb, **params))
            self._shapes[key] = ({k: v.shape for k, v in sa.items()}, {k: v.shape for k, v in rb.items()}, names)
        return self._shapes[key]

    def get(self, kind: str, **params) -> Shares:
        share_a, random_b, _ = KINDS[kind]
        shapes_a, shapes_b, keys = self._layout(kind, params)
        own = share_a(self.prg, **params) if self.role == "A" else random_b(self.prg, **params)
        outs = self.engine.run(kind, params, own, shapes_a, shapes_b, self.masks)
        if self.role == "A":
            for i, (storage, share) in enumerate(outs):
                self.peer.send({"t": "corr_out", "i": i, "xor": storage.startswith("cheetah.BShr")}, share)
            return own
        corr: Shares = {}
        for i, (storage, share) in enumerate(outs):
            header, other = self.peer.recv("corr_out")
            if other is None or other.shape != share.shape or header.get("i") != i:
                got = None if other is None else other.shape
                raise RuntimeError(f"server A sent output {header.get('i')} of shape {got} for {kind}, "
                                   f"expected output {i} of shape {share.shape}")
            corr[keys[i]] = share ^ other if storage.startswith("cheetah.BShr") else share + other
        return assemble_b(own, corr)
