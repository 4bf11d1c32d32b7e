"""Compile ``cpu_kernels.c`` once per machine and load it with ctypes.

The library is built with the system C compiler (``$CC`` or ``cc``; ``-O3 -march=native``) into a cache
folder (``$FEDSHIELD_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/fedshield/kernels``, else
``~/.cache/fedshield/kernels``), under a name that hashes the source, the flags, the compiler's version and the
CPU's feature flags, so a shared home folder on machines with different CPUs keeps one build per CPU kind.
Processes that build at the same time each write their own temporary file and rename it into place.

Without a compiler (or with ``FEDSHIELD_KERNELS=torch``) :func:`load` returns None and fedshield uses
PyTorch's own operations: the same results up to float rounding (docs/performance.md, "Kernels").
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

__all__ = ["load", "kernels_requested", "KernelBuildError"]

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC", "-std=c99"]

_lock = threading.Lock()
_cache: dict[str, object] = {}
_MISSING = object()


class KernelBuildError(RuntimeError):
    """The C kernels could not be built (no compiler, a compiler error) or loaded."""


def kernels_requested() -> bool:
    """False when ``FEDSHIELD_KERNELS`` is ``torch`` (or ``0``/``off``): use PyTorch's operations only."""
    return os.environ.get("FEDSHIELD_KERNELS", "auto").strip().lower() not in ("torch", "0", "off", "false", "no")


def _cache_dir() -> Path:
    if os.environ.get("FEDSHIELD_KERNEL_CACHE"):
        return Path(os.environ["FEDSHIELD_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fedshield" / "kernels"


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(cc: str) -> Path:
    source = SOURCE.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"cannot run the C compiler {cc!r}: {e}") from e
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS).encode(), version.encode(), _cpu_signature().encode(),
                                     platform.machine().encode()])).hexdigest()[:20]
    folder = _cache_dir()
    target = folder / f"cpu_kernels-{key}.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        try:
            res = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as e:  # cannot start, or hangs past the timeout
            raise KernelBuildError(f"{cc} could not compile {SOURCE.name}: {e}") from e
        if res.returncode != 0:
            raise KernelBuildError(f"{cc} failed to compile {SOURCE.name}:\n{res.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    P, L = ctypes.c_void_p, ctypes.c_long
    lib.pool_relu_fwd.argtypes = [P, P, P, L, L, L, L]
    lib.pool_relu_bwd.argtypes = [P, P, P, L, L, L, L]
    lib.conv_pool_wgrad.argtypes = [P, P, P, P, P, L, L, L, L, L, L]
    lib.conv_pool_dgrad.argtypes = [P, P, P, P, L, L, L, L, L, L]
    for fn in (lib.pool_relu_fwd, lib.pool_relu_bwd, lib.conv_pool_wgrad, lib.conv_pool_dgrad):
        fn.restype = None
    return lib


def load(strict: bool = False) -> Optional[ctypes.CDLL]:
    """The compiled kernels (built on first use), or None when they are turned off or cannot be built.

    ``strict=True`` raises :class:`KernelBuildError` instead of returning None after a failed build (a
    warning names the reason otherwise, once per process).
    """
    lib = _cache.get("lib", _MISSING)  # the hot path: a few calls per training step
    if lib is not _MISSING and lib is not None:
        return lib  # type: ignore[return-value]
    if not kernels_requested():
        if strict:
            raise KernelBuildError("the C kernels are turned off (FEDSHIELD_KERNELS=torch in the environment)")
        return None
    with _lock:
        if "lib" in _cache:
            lib = _cache["lib"]
            if lib is None and strict:
                raise KernelBuildError(str(_cache.get("error")))
            return lib  # type: ignore[return-value]
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        try:
            if cc is None:
                raise KernelBuildError("no C compiler found (set CC or install gcc, e.g. `apt-get install gcc`)")
            lib = _declare(ctypes.CDLL(str(_build(cc))))
        except (KernelBuildError, OSError) as e:
            _cache["lib"], _cache["error"] = None, e
            if strict:
                raise KernelBuildError(str(e)) from e
            warnings.warn(f"fedshield's C kernels are unavailable ({e}); using PyTorch's operations, which are "
                          "slower and round differently (docs/performance.md, Kernels)", RuntimeWarning, stacklevel=2)
            return None
        _cache["lib"] = lib
        return lib
