"""Progress of a run: a tqdm bar on a terminal, plain lines every few rounds otherwise (log files, CI, pipes),
so that a log holds readable lines instead of a carriage-return stream."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Optional, TextIO

from tqdm import tqdm

__all__ = ["RoundProgress"]


class RoundProgress:
    """``update(row)`` after each round. On a terminal: a bar with MA/BA/accepted; otherwise one line per
    ``every`` rounds (default: about ten lines per run) and one for the last round."""

    def __init__(self, name: str, total: int, first: int = 1, stream: Optional[TextIO] = None, every: Optional[int] = None):
        self.stream = stream if stream is not None else sys.stderr
        self.name, self.total = name, total
        self.every = every or max(1, math.ceil(total / 10))
        self.t0 = time.perf_counter()
        self.done = first - 1
        isatty = getattr(self.stream, "isatty", None)
        self.bar: Any = None
        if isatty is not None and isatty():
            self.bar = tqdm(total=total, initial=first - 1, desc=name, unit="round", dynamic_ncols=True, file=self.stream)

    def update(self, row: dict[str, Any]) -> None:
        self.done += 1
        evaluated = not math.isnan(row.get("ma", math.nan))
        if self.bar is not None:
            self.bar.update(1)
            if evaluated:
                self.bar.set_postfix(MA=f"{row['ma']:.3f}", BA=f"{row['ba']:.3f}", acc=f"{row['accepted']}/{row['selected']}")
            return
        if self.done % self.every and self.done != self.total:
            return
        parts = [f"{self.name}: round {self.done}/{self.total}"]
        if evaluated:
            parts.append(f"MA {row['ma']:.3f} BA {row['ba']:.3f}")
        parts.append(f"accepted {row['accepted']}/{row['selected']}")
        parts.append(f"{time.perf_counter() - self.t0:.0f} s")
        print("  ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
