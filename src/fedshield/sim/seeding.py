"""Moved to :mod:`fedshield.core.seeding`; kept as a re-export for old imports."""

from ..core.seeding import derive_seed, numpy_stream, torch_stream

__all__ = ["derive_seed", "torch_stream", "numpy_stream"]
