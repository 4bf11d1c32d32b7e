"""Bad-input corpus, data files: damaged IDX and CIFAR files, images that are not square, an explicit data
root that does not hold the dataset. Each is a DataFileError / DataNotFoundError naming the file or folder."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

import fedshield.data.datasets as dsmod
from fedshield.config import ConfigError, config_from_dict
from fedshield.data import DataFileError, DataNotFoundError, load_dataset, read_cifar_batch, read_idx_images, write_idx
from fedshield.sim.setup import build_setup

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No system folder, no $FEDSHIELD_DATA, a private cache and no network: only what a test writes exists."""
    monkeypatch.delenv(dsmod.ENV_VAR, raising=False)
    monkeypatch.setattr(dsmod, "SYSTEM_DIRS", {"fashion_mnist": (tmp_path / "system",)})
    monkeypatch.setattr(dsmod, "CACHE_ROOT", tmp_path / "cache")
    monkeypatch.setattr(dsmod.urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    dsmod.clear_dataset_cache()


def _mnist_like(folder: Path, h: int = 28, w: int = 28) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n in zip(STEMS, (6, 6, 4, 4)):
        arr = np.zeros((n, h, w), np.uint8) if "images" in stem else (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / stem, arr)
    return folder


def test_non_square_idx_images(tmp_path):
    path = write_idx(tmp_path / "img", np.zeros((3, 28, 20), np.uint8))
    with pytest.raises(DataFileError, match=r"img: images are 28x20"):
        read_idx_images(path)


def test_idx_file_with_no_images(tmp_path):
    path = write_idx(tmp_path / "img", np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(DataFileError, match="no images"):
        read_idx_images(path)


def test_non_square_dataset_fails_at_load_not_inside_torch(tmp_path):
    root = _mnist_like(tmp_path / "fm", 28, 24)
    with pytest.raises(DataFileError, match="28x24"):
        load_dataset("fashion_mnist", root=root, download=False)


def test_training_and_test_images_of_different_sizes_name_both_files(tmp_path):
    """Used to be a plain ValueError from the Dataset container that named neither file."""
    root = _mnist_like(tmp_path / "fm")
    write_idx(root / STEMS[2], np.zeros((4, 14, 14), np.uint8))
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte holds 28x28 images but .*t10k-images-idx3-ubyte "
                                            r"holds 14x14 images"):
        load_dataset("fashion_mnist", root=root, download=False)


def test_idx_header_claiming_more_data_than_the_file_holds(tmp_path):
    path = tmp_path / "img"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 28, 28) + b"\x00" * 100)
    with pytest.raises(DataFileError, match="truncated IDX payload"):
        read_idx_images(path)


def test_idx_labels_file_given_as_images(tmp_path):
    path = write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    with pytest.raises(DataFileError, match="1 dimensions"):
        read_idx_images(path)


def test_explicit_root_that_does_not_exist_never_falls_back(tmp_path):
    _mnist_like(tmp_path / "system")  # a complete copy elsewhere must not be used instead
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion_mnist", root=tmp_path / "typo", download=False)
    msg = str(err.value)
    assert str(tmp_path / "typo") in msg and "does not exist" in msg and "apt-get install" in msg


def test_explicit_root_that_is_a_file_says_so_and_names_the_install_command(tmp_path):
    """A file given as data.root used to be described as "does not exist"; the download hint used to say
    "allow download=True", which is no command one can type."""
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DataNotFoundError, match=r"f\.txt \(is a file, not a folder\).*apt-get install dataset-fashion-mnist"
                                                r".*python -c \"from fedshield.data import load_dataset; "
                                                r"load_dataset\('fashion_mnist', download=True\)\""):
        load_dataset("fashion_mnist", root=tmp_path / "f.txt", download=False)


def test_explicit_root_with_an_incomplete_copy(tmp_path):
    root = _mnist_like(tmp_path / "fm")
    (root / STEMS[3]).unlink()
    with pytest.raises(DataNotFoundError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        load_dataset("fashion_mnist", root=root, download=False)


def test_explicit_cifar_root_that_does_not_exist(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", root=tmp_path / "nowhere", download=False)


def test_data_root_through_the_config_names_the_path(tmp_path):
    cfg = config_from_dict({"data": {"dataset": "fashion_mnist", "root": str(tmp_path / "nowhere")}})
    with pytest.raises(DataNotFoundError, match="nowhere"):
        build_setup(cfg)


def test_cifar_pickle_with_an_unknown_codec(tmp_path):
    """A corrupted byte in the encoding name of a numpy array pickle: LookupError inside pickle."""
    arr = np.zeros((2, 3072), np.uint8)
    raw = pickle.dumps({b"data": arr, b"labels": [0, 1]}, protocol=2)
    assert b"latin1" in raw
    path = tmp_path / "data_batch_1"
    path.write_bytes(raw.replace(b"latin1", b"latinX", 1))
    with pytest.raises(DataFileError, match="data_batch_1: not a readable CIFAR-10 batch"):
        read_cifar_batch(path)


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x8d", b"\x96"], ids=["BINBYTES8", "BINUNICODE8", "BYTEARRAY8"])
def test_cifar_pickle_with_an_absurd_length_field(tmp_path, opcode):
    """A length field of 2**62 bytes: MemoryError inside pickle, reported as a damaged file."""
    path = tmp_path / "test_batch"
    path.write_bytes(b"\x80\x05" + opcode + struct.pack("<Q", 2**62))
    with pytest.raises(DataFileError, match="test_batch: not a readable CIFAR-10 batch"):
        read_cifar_batch(path)


def test_cifar_batch_of_random_bytes(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(DataFileError, match="data_batch_1"):
        read_cifar_batch(path)


def test_constant_training_images_name_data_normalize(tmp_path):
    """All-zero images (a damaged or placeholder copy) used to fail inside the model: "input std must be positive"."""
    root = _mnist_like(tmp_path / "fm")
    cfg = config_from_dict({"model": "small_cnn", "num_clients": 2, "clients_per_round": 2,
                            "data": {"dataset": "fashion_mnist", "root": str(root)}})
    with pytest.raises(ConfigError, match=r"data.normalize=standard: channel\(s\) \[0\] of the fashion_mnist training "
                                          r"images are constant.*data.normalize: none"):
        build_setup(cfg)
