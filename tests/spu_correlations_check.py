"""Run in SPU's virtualenv by tests/test_private_flame_cheetah.py (not collected by pytest): both servers as
threads over SPU's in-memory link compute each requested correlation under CHEETAH; prints "RESULT <json>" with,
per request, whether A's share and B's whole share equal the dealer's numpy formula bit for bit, and the check
of fedshield's SPU share codec against SPU's own Io.

    .venv-spu/bin/python tests/spu_correlations_check.py '[["cmp", {"n": 7, "shift": 28}], ...]'
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading

import numpy as np

from fedshield.mpc.cheetah import CheetahEngine, CheetahSource, decode_share, encode_share, memory_links
from fedshield.mpc.correlations import KINDS, assemble_b
from fedshield.mpc.prg import PRG
from fedshield.mpc.transport import Channel


def codec_matches_spu_io() -> bool:
    """Our encoding of a share has SPU's own meta bytes, and SPU's two shares decode to x when added."""
    import spu.api as spu_api
    import spu.libspu as libspu

    cfg = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.CHEETAH, field=libspu.FieldType.FM64)
    x = np.random.default_rng(0).integers(0, 2**64, (3, 5), dtype=np.uint64)
    s0, s1 = spu_api.Io(2, cfg).make_shares(x, libspu.Visibility.VIS_SECRET)
    (t0, a0), (t1, a1) = decode_share(s0.meta, list(s0.share_chunks)), decode_share(s1.meta, list(s1.share_chunks))
    meta, chunks = encode_share(a0)
    again = decode_share(meta, chunks)[1]
    return bool(meta == s0.meta and t0 == t1 == "cheetah.AShr<FM64>" and np.array_equal(a0 + a1, x)
                and np.array_equal(again, a0))


def main() -> None:
    requests = json.loads(sys.argv[1])
    seed_a, seed_b = os.urandom(32), os.urandom(32)
    links = memory_links(timeout=120)
    engines: list[CheetahEngine | None] = [None, None]
    sock_a, sock_b = socket.socketpair()
    peers = [Channel(sock_a, "server B", 120), Channel(sock_b, "server A", 120)]
    got: list[list] = [[], []]
    errors: list[str] = []

    def party(rank: int) -> None:
        try:
            engines[rank] = CheetahEngine(links[rank])  # collective: both at once
            source = CheetahSource("AB"[rank], (seed_a, seed_b)[rank], peers[rank], engines[rank])
            for kind, params in requests:
                got[rank].append(source.get(kind, **params))
        except Exception as exc:  # reported in the JSON
            errors.append(f"party {rank}: {type(exc).__name__}: {exc}")

    other = threading.Thread(target=party, args=(0,))
    other.start()
    party(1)
    other.join()
    prg_a, prg_b = PRG(seed_a), PRG(seed_b)
    results = []
    for (kind, params), share_a, share_b in zip(requests, *got):
        draw_a, draw_b, correction = KINDS[kind]
        sa, rb = draw_a(prg_a, **params), draw_b(prg_b, **params)
        want_b = assemble_b(rb, correction(sa, rb, **params))
        same_a = set(share_a) == set(sa) and all(np.array_equal(share_a[k], sa[k]) for k in sa)
        same_b = set(share_b) == set(want_b) and all(np.array_equal(share_b[k], want_b[k]) for k in want_b)
        results.append({"kind": kind, "params": params, "A": same_a, "B": same_b})
    print("RESULT " + json.dumps({"errors": errors, "results": results, "codec": codec_matches_spu_io(),
                      "runs": engines[1].runs if engines[1] else 0}))


if __name__ == "__main__":
    main()
