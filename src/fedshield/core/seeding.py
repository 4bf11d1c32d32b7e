"""Per-purpose random streams derived from the run's seed.

Every random decision draws from its own generator keyed by (seed, purpose, round, client), so a run is
reproducible from its seed alone, whatever order clients are trained in and whether it was resumed.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

__all__ = ["derive_seed", "torch_stream", "numpy_stream"]


def _key(part: int | str) -> int:
    return zlib.crc32(part.encode()) if isinstance(part, str) else int(part) & 0xFFFFFFFF


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the stream named by ``keys`` (strings and non-negative ints)."""
    ss = np.random.SeedSequence([_key(seed), *(_key(k) for k in keys)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def torch_stream(seed: int, *keys: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def numpy_stream(seed: int, *keys: int | str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *keys))
