"""fedshield flat vectors ↔ Flower ``ArrayRecord`` (one named array per tensor of the :class:`ParamLayout`)."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from torch import Tensor

from ..models import ParamLayout

__all__ = ["MalformedReply", "PREVIOUS_ARRAYS", "flat_to_arrayrecord", "arrayrecord_to_flat"]

# Key of a train message's second ArrayRecord: the model the previous round started from (attack state).
PREVIOUS_ARRAYS = "previous-arrays"


class MalformedReply(ValueError):
    """A client reply that cannot be turned into a model of the experiment's layout."""


def flat_to_arrayrecord(flat: Tensor, layout: ParamLayout) -> ArrayRecord:
    """One ``Array`` per layout tensor, keyed by its state-dict name, float32, in layout order."""
    if flat.shape != (layout.dim,):
        raise ValueError(f"flat vector has shape {tuple(flat.shape)}, layout needs ({layout.dim},)")
    host = flat.detach().to("cpu", torch.float32)
    return ArrayRecord({e.name: Array(host[e.slice].reshape(e.shape).numpy().copy()) for e in layout.entries})


def arrayrecord_to_flat(record: ArrayRecord, layout: ParamLayout) -> Tensor:
    """The flat float32 vector of ``record``; :class:`MalformedReply` on missing/extra keys, wrong shapes or
    dtypes, or non-finite values."""
    if not isinstance(record, ArrayRecord):
        raise MalformedReply(f"expected an ArrayRecord, got {type(record).__name__}")
    names = set(layout.names)
    missing = [n for n in layout.names if n not in record]
    extra = [k for k in record.keys() if k not in names]
    if missing or extra:
        raise MalformedReply(f"array keys do not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    parts = []
    for e in layout.entries:
        try:
            arr = record[e.name].numpy()
        except Exception as exc:  # undecodable bytes
            raise MalformedReply(f"array {e.name!r} cannot be decoded: {exc}") from None
        if tuple(arr.shape) != e.shape:
            raise MalformedReply(f"array {e.name!r} has shape {tuple(arr.shape)}, the model needs {e.shape}")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise MalformedReply(f"array {e.name!r} has dtype {arr.dtype}, expected a float array")
        parts.append(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).reshape(-1))
    flat = torch.cat(parts) if parts else torch.empty(0)
    if not bool(torch.isfinite(flat).all()):
        bad = [e.name for e in layout.entries if not bool(torch.isfinite(flat[e.slice]).all())]
        raise MalformedReply(f"non-finite values (NaN/Inf) in {bad[:5]}")
    return flat
