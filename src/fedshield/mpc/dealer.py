"""The trusted dealer: hands server A one seed, and answers server B's requests for correlation corrections.

The dealer never sees a share of a client's update; it only draws randomness. A request names a correlation
kind and its sizes (public); the dealer draws A's share from A's seed and B's random part from B's seed, in the
order B asks (which is the order A draws, since both run the same program), and sends B the correction.
"""

from __future__ import annotations

import threading

from .correlations import KINDS
from .prg import PRG
from .transport import Channel, ChannelError

__all__ = ["Dealer"]


class Dealer:
    """Serves one round of B's correlation requests on ``channel`` until B sends ``"corr_end"``."""

    def __init__(self, seed_a: bytes, seed_b: bytes, channel: Channel):
        self.prg_a = PRG(seed_a)
        self.prg_b = PRG(seed_b)
        self.channel = channel
        self.error: BaseException | None = None
        self.requests = 0

    def serve(self) -> None:
        try:
            while True:
                header, _ = self.channel.recv()
                kind = header.get("t")
                if kind == "corr_end":
                    return
                if kind != "corr" or header.get("kind") not in KINDS:
                    raise ChannelError(f"server B sent an unknown dealer request {header.get('kind', kind)!r}")
                share_a, random_b, correction = KINDS[header["kind"]]
                params = header.get("params", {})
                corr = correction(share_a(self.prg_a, **params), random_b(self.prg_b, **params), **params)
                for name, arr in corr.items():
                    self.channel.send({"t": "corr_part", "name": name}, arr)
                self.channel.send({"t": "corr_done"})
                self.requests += 1
        except BaseException as exc:  # reported by the coordinator
            self.error = exc

    def start(self) -> threading.Thread:
        th = threading.Thread(target=self.serve, name="mpc-dealer", daemon=True)
        th.start()
        return th
