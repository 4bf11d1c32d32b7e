"""IDX reader/writer: known answers, malformed files, and real Fashion-MNIST (fedshield.data.idx)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fedshield.data import DataFileError, load_dataset, read_idx, read_idx_images, read_idx_labels, write_idx

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

IMAGES = np.arange(12, dtype=np.uint8).reshape(3, 2, 2) * 20  # 0, 20, ..., 220
LABELS = np.array([7, 0, 9], dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_known_values(tmp_path: Path, compress: bool) -> None:
    img = write_idx(tmp_path / "images.bin", IMAGES, gzip=compress)
    lab = write_idx(tmp_path / "labels.bin", LABELS, gzip=compress)
    assert (img.read_bytes()[:2] == b"\x1f\x8b") == compress
    images, labels = read_idx_images(img), read_idx_labels(lab)
    assert images.dtype == torch.uint8 and images.shape == (3, 2, 2)
    assert images[1].tolist() == [[80, 100], [120, 140]]
    assert labels.tolist() == [7, 0, 9]


def test_header_bytes_are_the_mnist_ones(tmp_path: Path) -> None:
    raw = write_idx(tmp_path / "x", IMAGES).read_bytes()
    assert raw[:16] == bytes.fromhex("00000803" "00000003" "00000002" "00000002")
    assert raw[16:] == IMAGES.tobytes()
    assert write_idx(tmp_path / "y", LABELS).read_bytes() == bytes.fromhex("00000801" "00000003") + bytes([7, 0, 9])


def test_gzip_detected_by_magic_not_name(tmp_path: Path) -> None:
    body = bytes.fromhex("00000801" "00000002") + bytes([4, 5])
    (tmp_path / "plain.gz").write_bytes(body)  # .gz name, raw content
    (tmp_path / "packed").write_bytes(gzip.compress(body))  # no .gz, gzip content
    assert read_idx(tmp_path / "plain.gz").tolist() == [4, 5]
    assert read_idx(tmp_path / "packed").tolist() == [4, 5]


def test_other_dtypes_are_big_endian(tmp_path: Path) -> None:
    arr = np.array([[1.5, -2.0], [3.25, 1e6]], dtype=np.float32)
    out = read_idx(write_idx(tmp_path / "f", arr))
    assert out.dtype == torch.float32 and out.tolist() == arr.tolist()
    body = bytes.fromhex("00000c01" "00000001" "00000102")  # int32, one element 0x00000102
    (tmp_path / "i").write_bytes(body)
    assert read_idx(tmp_path / "i").tolist() == [258]


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_file_names_path(tmp_path: Path, compress: bool) -> None:
    raw = write_idx(tmp_path / "full", IMAGES).read_bytes()
    bad = tmp_path / "cut.idx"
    bad.write_bytes(gzip.compress(raw[:-1]) if compress else raw[:-1])
    with pytest.raises(DataFileError, match="truncated") as err:
        read_idx(bad)
    assert str(bad) in str(err.value)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    packed = gzip.compress(write_idx(tmp_path / "full", IMAGES).read_bytes())
    bad = tmp_path / "cut.gz"
    bad.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataFileError, match="gzip") as err:
        read_idx(bad)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("cut", [2, 6])
def test_truncated_header(tmp_path: Path, cut: int) -> None:
    bad = tmp_path / "h"
    bad.write_bytes(write_idx(tmp_path / "full", IMAGES).read_bytes()[:cut])
    with pytest.raises(DataFileError, match="truncated"):
        read_idx(bad)


@pytest.mark.parametrize("magic", ["01000803", "00000703", "00000800", "12345678"])
def test_wrong_magic(tmp_path: Path, magic: str) -> None:
    bad = tmp_path / "m"
    bad.write_bytes(bytes.fromhex(magic) + write_idx(tmp_path / "full", IMAGES).read_bytes()[4:])
    with pytest.raises(DataFileError, match="magic") as err:
        read_idx(bad)
    assert str(bad) in str(err.value)


def test_wrong_kind_of_file(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "labels", LABELS)
    with pytest.raises(DataFileError, match="expected 3"):
        read_idx_images(labels)
    with pytest.raises(DataFileError, match="uint8"):
        read_idx_labels(write_idx(tmp_path / "ints", LABELS.astype(np.int32)))


def test_extra_trailing_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "extra"
    bad.write_bytes(write_idx(tmp_path / "full", LABELS).read_bytes() + b"\x00\x00")
    with pytest.raises(DataFileError, match="2 extra bytes") as err:
        read_idx(bad)
    assert str(bad) in str(err.value)


def test_dims_must_match_payload(tmp_path: Path) -> None:
    bad = tmp_path / "dims"
    bad.write_bytes(bytes.fromhex("00000803") + struct.pack(">3I", 2, 2, 2) + IMAGES.tobytes())  # 8 declared, 12 given
    with pytest.raises(DataFileError, match="extra bytes"):
        read_idx(bad)


def test_write_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dtype"):
        write_idx(tmp_path / "u16", np.zeros(2, dtype=np.uint16))


@pytest.mark.skipif(
    not (FMNIST_DIR / "train-labels-idx1-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_known_answers() -> None:
    train_y = read_idx_labels(FMNIST_DIR / "train-labels-idx1-ubyte.gz")
    test_y = read_idx_labels(FMNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert train_y.shape == (60000,) and test_y.shape == (10000,)
    assert train_y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert test_y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert torch.bincount(train_y.long()).tolist() == [6000] * 10
    assert torch.bincount(test_y.long()).tolist() == [1000] * 10

    ds = load_dataset("fashion_mnist", root=FMNIST_DIR, download=False)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert 0.0 <= float(ds.train_x.min()) and float(ds.train_x.max()) <= 1.0 and float(ds.train_x.max()) == 1.0
    assert int((ds.train_x[0] * 255).round().sum()) == 76247  # pixel sum of the first image, read from the file
    assert ds.train_y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert (ds.in_channels, ds.image_size, ds.num_classes) == (1, 28, 10)
