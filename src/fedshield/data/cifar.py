"""CIFAR-10 "python version" batches (docs/architecture.md, ``data/``).

The official archive unpacks to a folder ``cifar-10-batches-py`` with pickles ``data_batch_1`` ..
``data_batch_5`` (10 000 images each) and ``test_batch``. Each pickle is a dict with ``b"data"``, an
``(N, 3072)`` uint8 array in channel-major order (1024 red, 1024 green, 1024 blue values, rows of 32), and
``b"labels"``, N ints in 0..9.

Pickles are read with a restricted unpickler that only resolves the numpy globals an array needs, so a
tampered file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from torch import Tensor

from .idx import DataFileError, DataNotFoundError

__all__ = [
    "CIFAR_DIR_NAME",
    "CIFAR_TRAIN_FILES",
    "CIFAR_TEST_FILE",
    "CIFAR_INSTALL_HINT",
    "find_cifar_dir",
    "read_cifar_batch",
    "read_cifar10",
]

CIFAR_DIR_NAME: Final = "cifar-10-batches-py"
CIFAR_TRAIN_FILES: Final = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE: Final = "test_batch"
CIFAR_INSTALL_HINT: Final = (
    "download it with `python -c \"from fedshield.data import load_dataset; load_dataset('cifar10', download=True)\"` "
    "(needs internet; it fetches "
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into ~/.cache/fedshield), or unpack that archive "
    f"yourself and `export FEDSHIELD_DATA=/path` to the folder that holds {CIFAR_DIR_NAME}/"
)

# Globals a pickled numpy array may reference (numpy 1.x and 2.x spellings).
_ALLOWED_GLOBALS: Final = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_ALLOWED_GLOBALS``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module.startswith("numpy.core.") and np.__version__.split(".")[0] != "1":
            module = "numpy._core." + module.removeprefix("numpy.core.")  # avoid numpy 2's deprecation shim
        return super().find_class(module, name)


def find_cifar_dir(folder: str | os.PathLike[str]) -> Path | None:
    """``folder`` itself or ``folder/cifar-10-batches-py``, whichever holds all six batches; else None."""
    folder = Path(folder)
    for candidate in (folder, folder / CIFAR_DIR_NAME):
        if all((candidate / f).is_file() for f in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE)):
            return candidate
    return None


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor]:
    """Read one batch pickle: images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: CIFAR-10 batch file missing; {CIFAR_INSTALL_HINT}")
    try:
        with path.open("rb") as fh:
            batch = _ArrayUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, LookupError, OverflowError) as exc:
        raise DataFileError(f"{path}: not a readable CIFAR-10 batch pickle ({type(exc).__name__}: {exc})") from exc
    except MemoryError:  # a corrupt length field asking for an impossible allocation
        raise DataFileError(f"{path}: not a readable CIFAR-10 batch pickle (a length field is corrupt)") from None
    if not isinstance(batch, dict):
        raise DataFileError(f"{path}: CIFAR-10 batch must be a dict, got {type(batch).__name__}")
    missing = [k for k in (b"data", b"labels") if k not in batch]
    if missing:
        raise DataFileError(f"{path}: CIFAR-10 batch lacks keys {missing}; has {sorted(map(repr, batch))}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFileError(f"{path}: b'data' must be an (N, 3072) uint8 array, got {data.shape} {data.dtype}")
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise DataFileError(
            f"{path}: b'labels' must be {data.shape[0]} integers (one per image), got {labels.shape} {labels.dtype}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFileError(f"{path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.astype(np.int64))


def read_cifar10(folder: str | os.PathLike[str]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Read all of CIFAR-10 from ``folder`` (the batch folder or its parent).

    Returns ``(train_x, train_y, test_x, test_y)``: uint8 images ``(N, 3, 32, 32)`` and int64 labels.
    Raises :class:`DataNotFoundError` with the install hint when a batch file is missing.
    """
    folder = Path(folder)
    found = find_cifar_dir(folder)
    if found is None:
        base = folder / CIFAR_DIR_NAME if (folder / CIFAR_DIR_NAME).is_dir() else folder
        missing = [f for f in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE) if not (base / f).is_file()]
        raise DataNotFoundError(f"{base}: CIFAR-10 batch files missing: {missing}; {CIFAR_INSTALL_HINT}")
    train = [read_cifar_batch(found / f) for f in CIFAR_TRAIN_FILES]
    test_x, test_y = read_cifar_batch(found / CIFAR_TEST_FILE)
    return torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), test_x, test_y
