"""Load a traffic dataset by name: read its files, preprocess, and cache the result on disk.

The cache (``$FEDSHIELD_CACHE/traffic``, default ``~/.cache/fedshield/traffic``) holds one ``.npz`` per
(dataset, source files, options): its key hashes every source file's resolved path, size and modification
time with the preprocessing options and :data:`CACHE_VERSION`, so a changed file or option re-parses and a
repeated run does not. Files are written to a temporary name and renamed (atomic). The synthetic dataset is
generated in memory and never cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Final, Mapping, Optional

import numpy as np

from ...core.errors import ConfigError, DataFileError, DataNotFoundError
from .cicids2017 import find_cicids2017, read_cicids2017
from .nbaiot import find_nbaiot, read_nbaiot
from .preprocess import PreparedTraffic, TrafficOptions, preprocess
from .synthetic_traffic import make_synthetic_traffic
from .table import RawTraffic
from .toniot import find_toniot, read_toniot
from .unsw_nb15 import FILES as UNSW_FILES
from .unsw_nb15 import find_unsw_nb15, read_unsw_nb15

__all__ = ["TRAFFIC_DATASETS", "CACHE_VERSION", "traffic_cache_dir", "load_prepared", "source_files"]

TRAFFIC_DATASETS: Final = ("unsw_nb15", "cicids2017", "nbaiot", "toniot", "synthetic_traffic")
CACHE_VERSION: Final = 1
_READERS: Final[dict[str, Callable[[Path], RawTraffic]]] = {
    "unsw_nb15": read_unsw_nb15,
    "cicids2017": read_cicids2017,
    "nbaiot": read_nbaiot,
    "toniot": read_toniot,
}


def traffic_cache_dir() -> Path:
    base = os.environ.get("FEDSHIELD_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "fedshield") / "traffic"


def source_files(name: str, root: Path) -> list[Path]:
    """The files dataset ``name`` is read from under ``root`` (``DataNotFoundError`` when absent)."""
    if name == "unsw_nb15":
        folder = find_unsw_nb15(root)
        return [folder / f for f in UNSW_FILES.values()]
    if name == "cicids2017":
        return find_cicids2017(root)
    if name == "nbaiot":
        return [p for _, _, p in find_nbaiot(root)]
    if name == "toniot":
        return [find_toniot(root)]
    raise ConfigError(f"unknown traffic dataset {name!r}; choose one of {list(TRAFFIC_DATASETS)}")


def _cache_key(name: str, files: list[Path], opts: TrafficOptions) -> str:
    stamp = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    blob = json.dumps({"v": CACHE_VERSION, "name": name, "files": stamp, "opts": opts.as_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


_ARRAYS: Final = ("train_x", "train_y", "test_x", "test_y", "train_family", "test_family", "train_device", "test_device")


def _save(path: Path, prep: PreparedTraffic) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: getattr(prep, k) for k in _ARRAYS if getattr(prep, k) is not None}
    meta = {"family_names": prep.family_names, "feature_names": prep.feature_names,
            "device_names": prep.device_names, "report": prep.report}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path) -> PreparedTraffic:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            arrays = {k: (z[k] if k in z.files else None) for k in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFileError(f"{path}: damaged traffic cache file ({type(exc).__name__}: {exc})") from None
    return PreparedTraffic(
        **arrays, family_names=tuple(meta["family_names"]), feature_names=tuple(meta["feature_names"]),
        device_names=tuple(meta["device_names"]), report=meta["report"],
    )


def load_prepared(
    name: str,
    root: Optional[str | os.PathLike[str]],
    opts: TrafficOptions,
    synthetic: Optional[Mapping[str, Any]] = None,
    use_cache: bool = True,
) -> PreparedTraffic:
    """Dataset ``name`` preprocessed with ``opts``; ``synthetic``: the generator's keyword arguments."""
    if name == "synthetic_traffic":
        prep = preprocess(make_synthetic_traffic(**dict(synthetic or {})), opts)
        prep.report["synthetic"] = dict(synthetic or {})
        return prep
    if name not in _READERS:
        raise ConfigError(f"unknown traffic dataset {name!r}; choose one of {list(TRAFFIC_DATASETS)}")
    if root is None:
        env = os.environ.get("FEDSHIELD_DATA")
        if not env:
            raise DataNotFoundError(
                f"{name}: set data.root to the folder holding the downloaded files (see docs/nids.md), "
                "or $FEDSHIELD_DATA to a folder with a subfolder named after the dataset"
            )
        root = Path(env) / name
    root = Path(root).expanduser()
    files = source_files(name, root)
    cache = traffic_cache_dir() / f"{name}-{_cache_key(name, files, opts)}.npz"
    if use_cache and cache.is_file():
        try:
            return _load(cache)
        except DataFileError as exc:  # the cache is derived data (written atomically): rebuild it from the files
            warnings.warn(f"{exc}; re-parsing the dataset files and rewriting it", stacklevel=2)
    prep = preprocess(_READERS[name](root), opts)
    prep.report["files"] = [str(p) for p in files]
    if use_cache:
        _save(cache, prep)
    return prep
