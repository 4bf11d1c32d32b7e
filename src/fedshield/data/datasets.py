"""Datasets as in-memory tensors, and where to find them (docs/architecture.md, ``data/``).

``load_dataset(name)`` returns a :class:`Dataset` with images ``(N, C, H, W)`` float32 scaled to [0, 1] (no
normalisation, as in the Fedward authors' code: docs/defenses.md, Fedward.5; FLAIN's code standardises,
docs/defenses.md, FLAIN.5) and int64 labels.

Where the files are looked for, in order (the first complete folder wins):

1. the ``root`` argument (the folder itself or its dataset subfolder); when given it is the only place looked
   in (a missing or incomplete root is an error, never a silent fallback to other files);
2. ``$FEDSHIELD_DATA`` (for Fashion-MNIST the folder itself or ``fashion-mnist/`` / ``fashion_mnist/``; for
   MNIST ``mnist/``; for CIFAR-10 ``cifar-10-batches-py/``);
3. system folders (``/usr/share/datasets/fashion-mnist`` from Debian's ``dataset-fashion-mnist`` package);
4. the cache ``~/.cache/fedshield/<dataset>``, downloaded there when missing and ``download`` is true.

The locations are the module constants :data:`SYSTEM_DIRS` and :data:`CACHE_ROOT`, read at call time, so
tests can monkeypatch them. Loaded datasets are kept in an in-process cache keyed by (name, folder); treat
their tensors as read-only.
"""

from __future__ import annotations

import functools
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Mapping, Optional

import torch

from ..core.registry import Registry
from .cifar import CIFAR_DIR_NAME, CIFAR_INSTALL_HINT, find_cifar_dir, read_cifar10
from .dataset import Dataset
from .idx import DataFileError, DataNotFoundError, read_idx, read_idx_images, read_idx_labels
from .synthetic import make_synthetic
from .traffic import TRAFFIC_DATASETS, TrafficMeta, TrafficOptions, load_prepared
from .traffic.meta import as_tensor
from .traffic.windows import make_windows

__all__ = [
    "Dataset",
    "DATASETS",
    "DATASET_NAMES",
    "ENV_VAR",
    "SYSTEM_DIRS",
    "CACHE_ROOT",
    "DOWNLOAD_TIMEOUT_S",
    "load_dataset",
    "locate_dataset",
    "data_install_hint",
    "clear_dataset_cache",
]

DATASETS: Registry[str] = Registry("dataset")
DATASETS.register("fashion_mnist", "fashion_mnist", "Fashion-MNIST: 60k/10k 28x28 grey images, 10 classes (IDX files)")
DATASETS.register("mnist", "mnist", "MNIST: 60k/10k 28x28 grey digits, 10 classes (IDX files)")
DATASETS.register("cifar10", "cifar10", "CIFAR-10: 50k/10k 32x32 colour images, 10 classes (python batches)")
DATASETS.register("synthetic", "synthetic", "deterministic synthetic blobs for fast tests (no files)")
DATASETS.register("unsw_nb15", "unsw_nb15", "UNSW-NB15 network flows, 9 attack families (CSV/Parquet; docs/nids.md)")
DATASETS.register("cicids2017", "cicids2017", "CIC-IDS2017 network flows, one family per attack label (CSV/Parquet; docs/nids.md)")
DATASETS.register("nbaiot", "nbaiot", "N-BaIoT traffic statistics per IoT device, Mirai/Gafgyt families (CSV; docs/nids.md)")
DATASETS.register("toniot", "toniot", "ToN-IoT network flows, 9 attack families (CSV; docs/nids.md)")
DATASETS.register("synthetic_traffic", "synthetic_traffic", "deterministic synthetic network flows per device (no files)")
IMAGE_DATASETS: Final = ("fashion_mnist", "mnist", "cifar10", "synthetic")
DATASET_NAMES: Final = IMAGE_DATASETS + TRAFFIC_DATASETS  # the registry's names, in this order
ENV_VAR: Final = "FEDSHIELD_DATA"
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),),
    "mnist": (),
    "cifar10": (),
}
CACHE_ROOT: Path = Path.home() / ".cache" / "fedshield"
DOWNLOAD_TIMEOUT_S: float = 60.0

_ALIASES: Final = {
    "fmnist": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "cifar": "cifar10",
    "cifar_10": "cifar10",
}
_IDX_STEMS: Final = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_URL: Final = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@dataclass(frozen=True)
class _IdxSource:
    """Where an MNIST-like dataset may live and where it is downloaded from."""

    title: str
    subdirs: tuple[str, ...]  # subfolders of root / $FEDSHIELD_DATA
    env_self: bool  # whether $FEDSHIELD_DATA itself may hold the files
    cache_subdir: str
    url_base: str


_IDX_SOURCES: Final = {
    "fashion_mnist": _IdxSource(
        "Fashion-MNIST",
        ("fashion-mnist", "fashion_mnist"),
        True,
        "fashion-mnist",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    "mnist": _IdxSource(
        "MNIST",
        ("mnist", "MNIST", "MNIST/raw"),
        False,
        "mnist",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
}


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASET_NAMES)}")
    return key


def data_install_hint(name: str) -> str:
    """The commands that make dataset ``name`` available."""
    key = _canonical(name)
    if key == "fashion_mnist":
        return (
            "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu; puts the files in "
            "/usr/share/datasets/fashion-mnist), or `export FEDSHIELD_DATA=/path` to a folder holding "
            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
            "t10k-labels-idx1-ubyte.gz (or a fashion-mnist/ subfolder with them), or download it on a machine "
            "with internet access: `python -c \"from fedshield.data import load_dataset; load_dataset('fashion_mnist', "
            f"download=True)\"` (files go to {CACHE_ROOT / 'fashion-mnist'})"
        )
    if key == "mnist":
        return (
            "`export FEDSHIELD_DATA=/path` to a folder with a mnist/ subfolder holding the four IDX files "
            "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
            "t10k-labels-idx1-ubyte[.gz]), or download it on a machine with internet access: "
            "`python -c \"from fedshield.data import load_dataset; load_dataset('mnist', download=True)\"` "
            f"(files go to {CACHE_ROOT / 'mnist'})"
        )
    if key == "cifar10":
        return CIFAR_INSTALL_HINT
    if key in TRAFFIC_DATASETS and key != "synthetic_traffic":
        return f"download {key} as docs/nids.md describes and set data.root to its folder"
    return "the synthetic datasets are generated in memory and need no files"


# ----------------------------------------------------------------------------------------------- locating


def _idx_files(folder: Path) -> dict[str, Path] | list[str]:
    """The four IDX files in ``folder`` (raw preferred over .gz), or the list of missing stems."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for stem in _IDX_STEMS:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            missing.append(f"{stem}[.gz]")
    return found if not missing else missing


def _describe_missing(folder: Path, key: str) -> str:
    if folder.exists() and not folder.is_dir():
        return "is a file, not a folder"
    if not folder.is_dir():
        return "does not exist"
    if key == "cifar10":
        return f"no complete {CIFAR_DIR_NAME} (data_batch_1..5, test_batch)"
    missing = _idx_files(folder)
    return f"missing {', '.join(missing)}" if isinstance(missing, list) else "complete"


def _is_complete(folder: Path, key: str) -> Path | None:
    """The folder to load from if ``folder`` holds a complete copy of dataset ``key``."""
    if key == "cifar10":
        return find_cifar_dir(folder)
    return folder if isinstance(_idx_files(folder), dict) else None


def _candidates(key: str, root: str | os.PathLike[str] | None) -> list[tuple[str, Path]]:
    """(label, folder) pairs to search, in lookup order, before any download."""
    places: list[tuple[str, Path]] = []
    subdirs = (CIFAR_DIR_NAME,) if key == "cifar10" else _IDX_SOURCES[key].subdirs
    if root is not None:
        base = Path(root).expanduser()
        places += [("root argument", base)] + [("root argument", base / s) for s in subdirs]
    env = os.environ.get(ENV_VAR)
    if env:
        base = Path(env).expanduser()
        self_ok = key == "cifar10" or _IDX_SOURCES[key].env_self
        places += ([(f"${ENV_VAR}", base)] if self_ok else []) + [(f"${ENV_VAR}", base / s) for s in subdirs]
    places += [("system folder", d) for d in SYSTEM_DIRS.get(key, ())]
    places.append(("cache", CACHE_ROOT if key == "cifar10" else CACHE_ROOT / _IDX_SOURCES[key].cache_subdir))
    return places


def _locate_in_root(key: str, title: str, base: Path) -> Path:
    """An explicit root is the only place looked in: finding the dataset elsewhere would silently train on
    other files than the ones asked for."""
    for label, folder in _candidates(key, base):
        if label == "root argument":
            hit = _is_complete(folder, key)
            if hit is not None:
                return hit
    raise DataNotFoundError(
        f"{title} not found in the given root {base} ({_describe_missing(base, key)}); an explicit root "
        f"(data.root) is the only place looked in. To fix: point it to the folder with the files, or drop "
        f"data.root to use the default lookup ($FEDSHIELD_DATA, system folders, the cache); {data_install_hint(key)}"
    )


def locate_dataset(name: str, root: str | os.PathLike[str] | None = None, download: bool = True) -> Path:
    """The folder dataset ``name`` will be loaded from, downloading into the cache if needed and allowed.

    Raises :class:`DataNotFoundError` listing every place tried and :func:`data_install_hint`.
    """
    key = _canonical(name)
    if key == "synthetic" or key in TRAFFIC_DATASETS:
        raise ValueError(f"{key} is not located here (synthetic, or a traffic dataset: see load_dataset)")
    title = "CIFAR-10" if key == "cifar10" else _IDX_SOURCES[key].title
    if root is not None:
        return _locate_in_root(key, title, Path(root).expanduser())
    tried: list[str] = []
    if not os.environ.get(ENV_VAR):
        tried.append(f"${ENV_VAR}: not set")
    for label, folder in _candidates(key, root):
        hit = _is_complete(folder, key)
        if hit is not None:
            return hit
        tried.append(f"{label} {folder}: {_describe_missing(folder, key)}")
    if not download:
        tried.append("download: disabled (download=False)")
    else:
        try:
            return _download_cifar() if key == "cifar10" else _download_idx(_IDX_SOURCES[key])
        except (OSError, DataFileError, tarfile.TarError) as exc:  # URLError and timeouts are OSErrors
            tried.append(f"download: failed ({type(exc).__name__}: {exc})")
    lines = "\n".join(f"  - {t}" for t in tried)
    raise DataNotFoundError(f"{title} not found. Looked in:\n{lines}\nTo fix: {data_install_hint(key)}")


# ---------------------------------------------------------------------------------------------- downloads


def _fetch(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` through a temporary file in the same folder, renamed atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download_idx(source: _IdxSource) -> Path:
    """Fetch the four gzip IDX files into the cache and check that they parse."""
    folder = CACHE_ROOT / source.cache_subdir
    for stem in _IDX_STEMS:
        dest = folder / f"{stem}.gz"
        if dest.is_file() or (folder / stem).is_file():
            continue
        _fetch(source.url_base + dest.name, dest)
        try:
            read_idx(dest)
        except DataFileError:
            dest.unlink(missing_ok=True)
            raise
    return folder


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Regular files and folders under ``cifar-10-batches-py/`` with no absolute or ``..`` parts."""
    members = []
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if not parts or parts[0] != CIFAR_DIR_NAME or ".." in parts or member.name.startswith("/"):
            continue
        if member.isfile() or member.isdir():
            members.append(member)
    return members


def _download_cifar() -> Path:
    """Fetch and unpack the CIFAR-10 python archive into ``CACHE_ROOT/cifar-10-batches-py``."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    archive = CACHE_ROOT / "cifar-10-python.tar.gz"
    if not archive.is_file():
        _fetch(_CIFAR_URL, archive)
    target = CACHE_ROOT / CIFAR_DIR_NAME
    with tempfile.TemporaryDirectory(dir=CACHE_ROOT, prefix=".cifar-extract.") as tmp:
        with tarfile.open(archive, "r:gz") as tar:
            members = _safe_members(tar)
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **kwargs)  # type: ignore[arg-type]
        extracted = Path(tmp) / CIFAR_DIR_NAME
        if find_cifar_dir(extracted) is None:
            raise DataFileError(f"{archive}: archive does not contain a complete {CIFAR_DIR_NAME}")
        target.mkdir(exist_ok=True)
        for item in extracted.iterdir():
            if item.is_file():
                os.replace(item, target / item.name)
    archive.unlink(missing_ok=True)
    return target


# ------------------------------------------------------------------------------------------------ loading


def _load_idx_folder(key: str, folder: Path) -> Dataset:
    files = _idx_files(folder)
    assert isinstance(files, dict)
    splits = []
    for images_stem, labels_stem in (_IDX_STEMS[:2], _IDX_STEMS[2:]):
        images, labels = read_idx_images(files[images_stem]), read_idx_labels(files[labels_stem])
        if images.shape[0] != labels.shape[0]:
            raise DataFileError(
                f"{files[images_stem]} holds {images.shape[0]} images but {files[labels_stem]} "
                f"holds {labels.shape[0]} labels"
            )
        if labels.numel() and int(labels.max()) > 9:
            raise DataFileError(f"{files[labels_stem]}: labels must lie in 0..9, found {int(labels.max())}")
        splits += [images.unsqueeze(1).to(torch.float32).div_(255.0), labels.to(torch.int64)]
    train_hw, test_hw = tuple(splits[0].shape[2:]), tuple(splits[2].shape[2:])
    if train_hw != test_hw:
        raise DataFileError(
            f"{files[_IDX_STEMS[0]]} holds {train_hw[0]}x{train_hw[1]} images but {files[_IDX_STEMS[2]]} holds "
            f"{test_hw[0]}x{test_hw[1]} images; the training and test files must come from one dataset"
        )
    return Dataset(key, *splits, num_classes=10)


def _load_cifar_folder(folder: Path) -> Dataset:
    train_x, train_y, test_x, test_y = read_cifar10(folder)
    scale = lambda x: x.to(torch.float32).div_(255.0)  # noqa: E731
    return Dataset("cifar10", scale(train_x), train_y, scale(test_x), test_y, num_classes=10)


@functools.lru_cache(maxsize=8)
def _load_cached(key: str, folder: str) -> Dataset:
    if key == "synthetic":
        return make_synthetic()
    if key == "cifar10":
        return _load_cifar_folder(Path(folder))
    return _load_idx_folder(key, Path(folder))


@functools.lru_cache(maxsize=4)
def _load_traffic(key: str, root: str | None, opts: TrafficOptions, synthetic: tuple, window: int = 0) -> Dataset:
    prep = load_prepared(key, root, opts, dict(synthetic))
    splits = {}
    for split in ("train", "test"):
        x, y = getattr(prep, f"{split}_x"), getattr(prep, f"{split}_y")
        fam, dev = getattr(prep, f"{split}_family"), getattr(prep, f"{split}_device")
        if window:
            x, end = make_windows(x, dev, window)  # a window takes its last flow's label, family, device
            y, fam, dev = y[end], fam[end], None if dev is None else dev[end]
        splits[split] = (x, y, fam, dev)
    (trx, tr_y, tr_f, tr_d), (tex, te_y, te_f, te_d) = splits["train"], splits["test"]
    report = dict(prep.report, window=window)
    meta = TrafficMeta(
        feature_names=prep.feature_names, family_names=prep.family_names,
        train_family=as_tensor(tr_f), test_family=as_tensor(te_f),
        label_mode=opts.label, train_device=as_tensor(tr_d), test_device=as_tensor(te_d),
        device_names=prep.device_names, report=report,
    )
    num_classes = 2 if opts.label == "binary" else len(prep.family_names)
    return Dataset(key, as_tensor(trx), as_tensor(tr_y), as_tensor(tex), as_tensor(te_y), num_classes, traffic=meta)


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    traffic: Optional[TrafficOptions] = None,
    synthetic: Optional[Mapping[str, Any]] = None,
    window: int = 0,
) -> Dataset:
    """Load ``name`` (``fashion_mnist``, ``mnist``, ``cifar10``, ``synthetic`` or a traffic dataset of
    :data:`~fedshield.data.traffic.TRAFFIC_DATASETS`) as in-memory tensors.

    MNIST-likes come as ``(N, 1, 28, 28)``, CIFAR-10 as ``(N, 3, 32, 32)``; pixels are scaled to [0, 1].
    See the module docstring for the lookup order. Traffic datasets are read from ``root`` and preprocessed
    with ``traffic`` (default :class:`TrafficOptions`); ``synthetic`` holds the synthetic traffic generator's
    arguments; ``window`` > 0 turns each split into windows of that many consecutive flows per device
    (:mod:`fedshield.data.traffic.windows`). Repeated calls return the same cached object.
    """
    key = _canonical(name)
    if key in TRAFFIC_DATASETS:
        opts = traffic or TrafficOptions()
        return _load_traffic(key, None if root is None else str(root), opts, tuple(sorted((synthetic or {}).items())),
                             int(window))
    if key == "synthetic":
        return _load_cached(key, "")
    folder = locate_dataset(key, root=root, download=download)
    return _load_cached(key, str(folder.resolve()))


def clear_dataset_cache() -> None:
    """Forget every dataset loaded in this process."""
    _load_cached.cache_clear()
    _load_traffic.cache_clear()
