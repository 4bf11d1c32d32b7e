"""CIFAR-10 python batches: tiny fake pickles read back exactly (fedshield.data.cifar)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fedshield.data import DataFileError, DataNotFoundError, read_cifar10, read_cifar_batch
from fedshield.data.cifar import CIFAR_DIR_NAME


def fake_batch(n: int, offset: int) -> dict[bytes, object]:
    data = ((np.arange(n * 3072, dtype=np.int64) + offset) % 251).astype(np.uint8).reshape(n, 3072)
    return {b"batch_label": b"fake", b"data": data, b"labels": [(offset + i) % 10 for i in range(n)]}


def write_cifar(folder: Path, n: int = 2, protocol: int = 2) -> Path:
    batches = folder / CIFAR_DIR_NAME
    batches.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        (batches / name).write_bytes(pickle.dumps(fake_batch(n, offset=i), protocol=protocol))
    return batches


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_batch_layout_known_values(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps(fake_batch(2, offset=0), protocol=protocol))
    x, y = read_cifar_batch(path)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [0, 1] and y.dtype == torch.int64
    # channel-major rows: image 0, green channel (offset 1024), row 1 (offset 32), column 5
    assert int(x[0, 1, 1, 5]) == (1024 + 32 + 5) % 251
    assert int(x[1, 2, 31, 31]) == (3072 + 3071) % 251


def test_numpy1_pickles_are_read(tmp_path: Path) -> None:
    """The official files name ``numpy.core.multiarray``; numpy 2 writes ``numpy._core``."""
    raw = pickle.dumps(fake_batch(1, offset=3), protocol=2)
    path = tmp_path / "old"
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    x, y = read_cifar_batch(path)
    assert y.tolist() == [3] and int(x[0, 0, 0, 0]) == 3


def test_read_all_batches(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path, n=2)
    for folder in (tmp_path, batches):  # the parent or the batch folder itself
        train_x, train_y, test_x, test_y = read_cifar10(folder)
        assert train_x.shape == (10, 3, 32, 32) and test_x.shape == (2, 3, 32, 32)
        assert train_y.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5] and test_y.tolist() == [5, 6]
        assert int(train_x[2, 0, 0, 0]) == 1  # first image of data_batch_2 starts at offset 1


def test_missing_batch_gives_install_hint(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path)
    (batches / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError) as err:
        read_cifar10(tmp_path)
    msg = str(err.value)
    assert "data_batch_3" in msg and "FEDSHIELD_DATA" in msg and "download" in msg
    assert isinstance(err.value, FileNotFoundError)


@pytest.mark.parametrize(
    "content, match",
    [
        ({b"labels": [1]}, "lacks keys"),
        ({b"data": np.zeros((1, 100), np.uint8), b"labels": [1]}, "3072"),
        ({b"data": np.zeros((1, 3072), np.float32), b"labels": [1]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "one per image"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, "0..9"),
        ([1, 2], "dict"),
    ],
)
def test_malformed_batches(tmp_path: Path, content: object, match: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(DataFileError, match=match) as err:
        read_cifar_batch(path)
    assert str(path) in str(err.value)


def test_pickle_cannot_run_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataFileError, match="not allowed"):
        read_cifar_batch(path)


def test_truncated_pickle(tmp_path: Path) -> None:
    path = tmp_path / "cut"
    path.write_bytes(pickle.dumps(fake_batch(1, 0))[:100])
    with pytest.raises(DataFileError, match="not a readable"):
        read_cifar_batch(path)
