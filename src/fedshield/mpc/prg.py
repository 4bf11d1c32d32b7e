"""A cryptographic pseudo-random generator: AES-256 in counter mode, read as a stream of uint64 words.

A 32-byte seed stands in for a long uniform vector: a client hands server A its seed instead of the share
itself, and the dealer hands A one seed for all of A's correlated randomness. Both sides that hold a seed draw
the same words in the same order.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["PRG", "SEED_BYTES"]

SEED_BYTES = 32


class PRG:
    """Deterministic stream of uniform ring elements from a 32-byte seed (AES-256-CTR over zero bytes)."""

    def __init__(self, seed: bytes):
        if len(seed) != SEED_BYTES:
            raise ValueError(f"PRG seed must be {SEED_BYTES} bytes, got {len(seed)}")
        self._enc = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()

    def u64(self, shape: int | tuple[int, ...]) -> np.ndarray:
        """A fresh uniform uint64 array of ``shape``."""
        count = int(np.prod(shape, dtype=np.int64))
        out = np.zeros(count + 2, dtype=np.uint64)  # update_into needs 15 spare bytes
        self._enc.update_into(memoryview(out[:count]).cast("B"), memoryview(out).cast("B"))
        return out[:count].reshape(shape)

    def bits(self, shape: int | tuple[int, ...]) -> np.ndarray:
        """Uniform 0/1 uint64 array (one bit per element, from the low bit of a word)."""
        return self.u64(shape) & np.uint64(1)
