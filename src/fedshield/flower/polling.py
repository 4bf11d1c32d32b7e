"""A Grid that collects replies every ``interval`` seconds instead of Flower's fixed 3 s.

Flower 1.41–1.42's deployed ``Grid.send_and_receive`` pushes the round's messages, then pulls replies and
sleeps 3 s between pulls, so the ServerApp notices the last reply of a round up to 3 s late (1.5 s on average).
:class:`PollingGrid` does the same push and pull through the Grid's public ``push_messages`` /
``pull_messages`` with a shorter sleep; everything else is delegated to the wrapped Grid.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Optional

from flwr.app import Message
from flwr.serverapp import Grid

__all__ = ["PollingGrid"]


class PollingGrid:
    """Wraps a Flower :class:`Grid`; only ``send_and_receive`` differs (pull every ``interval`` s)."""

    def __init__(self, grid: Grid, interval: float = 0.1):
        if not interval > 0:
            raise ValueError(f"interval={interval} must be > 0 seconds")
        self._grid = grid
        self.interval = float(interval)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: Optional[float] = None) -> Iterable[Message]:
        """Push ``messages``, then pull replies every ``interval`` s until all arrived or ``timeout`` passed."""
        pending = set(self._grid.push_messages(messages))
        end = time.time() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while pending and (timeout is None or time.time() < end):
            got = list(self._grid.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending:
                time.sleep(self.interval)
        return replies
