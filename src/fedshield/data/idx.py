"""IDX files (the MNIST / Fashion-MNIST format), read strictly and written for tests.

Layout: a 4-byte magic ``00 00 <dtype> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then exactly ``prod(dims)`` items of ``dtype`` in big-endian order. MNIST-like labels have
magic ``0x00000801`` (uint8, 1-D) and images ``0x00000803`` (uint8, 3-D). Files may be gzip-compressed;
compression is detected from the gzip magic bytes ``1f 8b``, never from the file name.

Also home of the two data errors, so that every reader in ``fedshield.data`` can raise them.
"""

from __future__ import annotations

import gzip as _gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Final

import numpy as np
import torch
from torch import Tensor

from ..core.errors import DataFileError, DataNotFoundError

__all__ = [
    "DataFileError",
    "DataNotFoundError",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "write_idx",
]

GZIP_MAGIC: Final = b"\x1f\x8b"

# IDX dtype code -> big-endian numpy dtype.
_IDX_DTYPES: Final[dict[int, np.dtype]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND: Final[dict[tuple[str, int], int]] = {
    (dt.kind, dt.itemsize): code for code, dt in _IDX_DTYPES.items()
}


def _read_bytes(path: Path) -> bytes:
    """Whole file contents, decompressed when it starts with the gzip magic."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataNotFoundError(f"{path}: no such file") from exc
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return _gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataFileError(f"{path}: corrupt or truncated gzip stream ({exc})") from exc


def read_idx(path: str | os.PathLike[str], *, expected_ndim: int | None = None) -> Tensor:
    """Read an IDX file (gzip or raw) into a tensor of the stored dtype and shape.

    Raises :class:`DataFileError` naming ``path`` when the magic is wrong, the header or payload is
    truncated, there are bytes after the payload, or the number of dimensions differs from ``expected_ndim``.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFileError(f"{path}: truncated IDX file ({len(data)} bytes, the 4-byte magic is incomplete)")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if zero0 != 0 or zero1 != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise DataFileError(
            f"{path}: not an IDX file (magic 0x{magic:08x}; expected 0x0000TTNN with dtype code TT in "
            f"{sorted(hex(c) for c in _IDX_DTYPES)} and NN >= 1 dimensions)"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataFileError(f"{path}: IDX file has {ndim} dimensions (magic 0x{magic:08x}); expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFileError(f"{path}: truncated IDX header ({len(data)} bytes; {ndim} dims need {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    payload = len(data) - header
    if payload < expected:
        raise DataFileError(
            f"{path}: truncated IDX payload: dims {list(dims)} need {expected} bytes, found {payload}"
        )
    if payload > expected:
        raise DataFileError(
            f"{path}: {payload - expected} extra bytes after the IDX payload (dims {list(dims)} need {expected})"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def read_idx_images(path: str | os.PathLike[str]) -> Tensor:
    """Read a uint8 image file (magic ``0x00000803``): a ``(N, H, W)`` uint8 tensor."""
    images = read_idx(path, expected_ndim=3)
    if images.dtype != torch.uint8:
        raise DataFileError(f"{path}: image file holds {images.dtype}; expected uint8 (magic 0x00000803)")
    return images


def read_idx_labels(path: str | os.PathLike[str]) -> Tensor:
    """Read a uint8 label file (magic ``0x00000801``): an ``(N,)`` uint8 tensor."""
    labels = read_idx(path, expected_ndim=1)
    if labels.dtype != torch.uint8:
        raise DataFileError(f"{path}: label file holds {labels.dtype}; expected uint8 (magic 0x00000801)")
    return labels


def write_idx(path: str | os.PathLike[str], array: np.ndarray | Tensor, gzip: bool = False) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when ``gzip``); returns the path. Used by tests."""
    arr = array.numpy() if isinstance(array, Tensor) else np.asarray(array)
    if arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"write_idx: array must have 1..255 dimensions, got {arr.ndim}")
    code = _CODE_OF_KIND.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise ValueError(f"write_idx: dtype {arr.dtype} has no IDX code (supported: u1, i1, i2, i4, f4, f8)")
    body = (
        bytes([0, 0, code, arr.ndim])
        + struct.pack(f">{arr.ndim}I", *arr.shape)
        + np.ascontiguousarray(arr, dtype=_IDX_DTYPES[code]).tobytes()
    )
    path = Path(path)
    path.write_bytes(_gzip.compress(body) if gzip else body)
    return path
