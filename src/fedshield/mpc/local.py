"""Both servers in one process: A and B as threads over socket pairs, with the dealer thread. For tests and
benchmarks of the 2PC operations without starting server processes (the protocol is the same)."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any, Callable

from .dealer import Dealer
from .party import DealerLink, Party, SeededSource
from .transport import Channel

__all__ = ["run_local_pair"]


def run_local_pair(fn_a: Callable[[Party], Any], fn_b: Callable[[Party], Any], timeout: float = 30.0) -> tuple[Any, Any]:
    """Run ``fn_a(server A)`` and ``fn_b(server B)`` side by side and return both results; the dealer thread
    serves B's correlations. Raises ``RuntimeError`` if the dealer failed."""
    s1, s2 = socket.socketpair()
    d1, d2 = socket.socketpair()
    seed_a, seed_b = os.urandom(32), os.urandom(32)
    dealer = Dealer(seed_a, seed_b, Channel(d1, "server B", timeout))
    dealer_thread = dealer.start()
    pa = Party("A", Channel(s1, "server B", timeout), SeededSource(seed_a))
    link = Channel(d2, "dealer", timeout)
    pb = Party("B", Channel(s2, "server A", timeout), DealerLink(seed_b, link))
    out: dict[str, Any] = {}
    ta = threading.Thread(target=lambda: out.setdefault("A", fn_a(pa)))
    ta.start()
    out["B"] = fn_b(pb)
    link.send({"t": "corr_end"})
    ta.join()
    dealer_thread.join()
    if dealer.error is not None:
        raise RuntimeError(f"the dealer failed: {dealer.error}")
    return out["A"], out["B"]
