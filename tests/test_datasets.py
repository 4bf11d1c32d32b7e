"""Dataset lookup order, error messages, downloads (faked) and the synthetic set (fedshield.data.datasets)."""

from __future__ import annotations

import io
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import fedshield.data.datasets as dsmod
from fedshield.data import (
    DataNotFoundError,
    Dataset,
    data_install_hint,
    load_dataset,
    locate_dataset,
    make_synthetic,
    write_idx,
)

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_mnist_like(folder: Path, tag: int, gz: bool = True, n_train: int = 6, n_test: int = 4) -> Path:
    """Four tiny IDX files whose first training label is ``tag`` (to tell folders apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(tag)
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        np.array([tag] + [i % 10 for i in range(1, n_train)], dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        np.arange(n_test, dtype=np.uint8) % 10,
    )
    for stem, array in zip(STEMS, arrays):
        write_idx(folder / (stem + (".gz" if gz else "")), array, gzip=gz)
    return folder


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No env var, system folders and cache under tmp_path, no network, a fresh in-process cache."""
    monkeypatch.delenv(dsmod.ENV_VAR, raising=False)
    monkeypatch.setattr(dsmod, "SYSTEM_DIRS", {"fashion_mnist": (tmp_path / "system" / "fashion-mnist",)})
    monkeypatch.setattr(dsmod, "CACHE_ROOT", tmp_path / "cache")

    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(dsmod.urllib.request, "urlopen", no_network)
    dsmod.clear_dataset_cache()
    yield tmp_path
    dsmod.clear_dataset_cache()


def first_label(ds: Dataset) -> int:
    return int(ds.train_y[0])


def test_env_folder_itself_and_subfolders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "env"
    monkeypatch.setenv("FEDSHIELD_DATA", str(env))
    write_mnist_like(env / "fashion_mnist", tag=3)
    assert first_label(load_dataset("fashion_mnist", download=False)) == 3
    write_mnist_like(env, tag=4, gz=False)  # the folder itself wins over its subfolders
    dsmod.clear_dataset_cache()
    ds = load_dataset("fashion_mnist", download=False)
    assert first_label(ds) == 4
    assert ds.train_x.shape == (6, 1, 28, 28) and ds.test_y.tolist() == [0, 1, 2, 3]
    write_mnist_like(env / "mnist", tag=5)
    assert first_label(load_dataset("mnist", download=False)) == 5


def test_lookup_order_root_env_system_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist_like(tmp_path / "cache" / "fashion-mnist", tag=1)
    assert first_label(load_dataset("fashion_mnist", download=False)) == 1
    write_mnist_like(tmp_path / "system" / "fashion-mnist", tag=2)
    assert first_label(load_dataset("fashion_mnist", download=False)) == 2
    monkeypatch.setenv("FEDSHIELD_DATA", str(tmp_path / "env"))
    write_mnist_like(tmp_path / "env" / "fashion-mnist", tag=3)
    assert first_label(load_dataset("fashion_mnist", download=False)) == 3
    write_mnist_like(tmp_path / "root", tag=4)
    assert first_label(load_dataset("fashion_mnist", root=tmp_path / "root", download=False)) == 4
    with pytest.raises(DataNotFoundError, match="nowhere"):  # an explicit root never falls back to $FEDSHIELD_DATA
        locate_dataset("fashion_mnist", root=tmp_path / "nowhere", download=False)
    assert locate_dataset("fashion_mnist", download=False) == tmp_path / "env" / "fashion-mnist"


def test_values_scaled_and_cached(tmp_path: Path) -> None:
    folder = write_mnist_like(tmp_path / "cache" / "fashion-mnist", tag=0, gz=False)
    ds = load_dataset("fashion_mnist", download=False)
    raw = np.frombuffer((folder / STEMS[0]).read_bytes()[16:], dtype=np.uint8).reshape(6, 28, 28)
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(raw.astype(np.float32) / 255))
    assert ds.train_x.dtype == torch.float32 and 0 <= float(ds.train_x.min()) and float(ds.train_x.max()) <= 1
    assert load_dataset("fashion-mnist", download=False) is ds  # alias, same cached object
    dsmod.clear_dataset_cache()
    assert load_dataset("fashion_mnist", download=False) is not ds


def test_not_found_message(tmp_path: Path) -> None:
    partial = tmp_path / "cache" / "fashion-mnist"
    write_mnist_like(partial, tag=0)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion_mnist", root=tmp_path / "missing", download=False)
    assert str(tmp_path / "missing") in str(err.value) and "does not exist" in str(err.value)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion_mnist", download=False)
    msg = str(err.value)
    for expected in (
        "Fashion-MNIST not found",
        "$FEDSHIELD_DATA: not set",
        str(tmp_path / "system" / "fashion-mnist"),
        "missing t10k-labels-idx1-ubyte[.gz]",
        "download=False",
        "apt-get install dataset-fashion-mnist",
        "export FEDSHIELD_DATA=/path",
    ):
        assert expected in msg, expected
    assert isinstance(err.value, FileNotFoundError)


def test_download_failure_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="download: failed .*network disabled"):
        load_dataset("mnist", download=True)
    assert not any((tmp_path / "cache").rglob("*.part"))


def test_download_writes_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = write_mnist_like(tmp_path / "server", tag=7)
    urls: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        urls.append(url)
        return io.BytesIO((served / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(dsmod.urllib.request, "urlopen", fake_urlopen)
    ds = load_dataset("fashion_mnist", download=True)
    assert first_label(ds) == 7
    assert urls[0] == "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz"
    cache = tmp_path / "cache" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(s + ".gz" for s in STEMS)


def test_cifar_download_extracts_safely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
            body = pickle.dumps({b"data": np.full((1, 3072), i, np.uint8), b"labels": [i]}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        evil = tarfile.TarInfo("../escaped")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    monkeypatch.setattr(dsmod.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(buffer.getvalue()))
    ds = load_dataset("cifar10", download=True)
    assert ds.train_x.shape == (5, 3, 32, 32) and ds.test_x.shape == (1, 3, 32, 32)
    assert ds.train_y.tolist() == [0, 1, 2, 3, 4] and float(ds.test_x.max()) == pytest.approx(5 / 255)
    assert (ds.in_channels, ds.image_size) == (3, 32)
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "cache" / "cifar-10-python.tar.gz").exists()


def test_cifar_not_found_message() -> None:
    with pytest.raises(DataNotFoundError, match="CIFAR-10 not found(.|\n)*FEDSHIELD_DATA"):
        load_dataset("cifar10", download=False)


def test_names_and_hints() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    assert "apt-get install dataset-fashion-mnist" in data_install_hint("fashion_mnist")
    assert "FEDSHIELD_DATA" in data_install_hint("mnist") and "FEDSHIELD_DATA" in data_install_hint("cifar10")


def test_dataset_validates_shapes() -> None:
    x, y = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="train_y"):
        Dataset("bad", x, y[:3], x, y, 10)
    with pytest.raises(ValueError, match="float32"):
        Dataset("bad", x.double(), y, x, y, 10)


def test_synthetic_is_deterministic_and_learnable() -> None:
    a, b = make_synthetic(seed=1), make_synthetic(seed=1)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, make_synthetic(seed=2).train_x)
    assert torch.equal(make_synthetic(seed=1, num_test=50).train_x, a.train_x)  # test size leaves train alone
    assert a.train_x.shape == (2000, 1, 28, 28) and a.test_x.shape == (500, 1, 28, 28)
    assert a.train_x.dtype == torch.float32 and float(a.train_x.min()) >= 0 and float(a.train_x.max()) <= 1
    assert torch.bincount(a.train_y).tolist() == [200] * 10
    # a nearest-class-mean classifier already separates the classes, so a small CNN learns them quickly
    means = torch.stack([a.train_x[a.train_y == c].mean(0) for c in range(10)]).flatten(1)
    pred = torch.cdist(a.test_x.flatten(1), means).argmin(1)
    assert float((pred == a.test_y).float().mean()) > 0.9
    rgb = make_synthetic(num_train=20, num_test=10, num_classes=4, image_size=32, channels=3)
    assert (rgb.in_channels, rgb.image_size, rgb.num_classes) == (3, 32, 4)
    assert load_dataset("synthetic") is load_dataset("synthetic")
    with pytest.raises(ValueError, match="num_classes=1 is invalid"):
        make_synthetic(num_classes=1)
