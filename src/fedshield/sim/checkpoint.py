"""Checkpoints and model files: only tensors and plain containers, loaded with ``weights_only=True``.

A run's ``checkpoint.pt`` and ``final_model.pt`` hold tensors, numbers, strings, lists and dicts, nothing
else: ``torch.load(..., weights_only=True)`` then refuses any other object, so a planted or tampered file
cannot run code when a run is resumed. A defense's state between rounds (FoolsGold's histories, CRFL's
clipped model) is saved as its plain attributes (:func:`defense_state`) and put back into the defense the
config builds (:func:`restore_defense_state`). Every damaged, foreign or unreadable file raises
:class:`CheckpointError` naming it; a model with NaN/Inf is never written (:func:`require_finite_model`).
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from .output import atomic_torch_save

__all__ = [
    "CheckpointError",
    "CHECKPOINT_KEYS",
    "save_model_file",
    "load_model_file",
    "load_checkpoint",
    "defense_state",
    "restore_defense_state",
    "require_finite_model",
]

CHECKPOINT_KEYS = ("round", "global_params", "initial_params", "rows", "defense_state", "attack_state", "config")


class CheckpointError(ValueError):
    """A checkpoint or model file that is damaged, foreign, or would hold a non-finite model; names the file."""


def _is_plain(x: Any) -> bool:
    """Tensors, numbers, strings, None and lists/tuples/dicts of those: what ``weights_only`` loading allows."""
    if x is None or isinstance(x, (bool, int, float, str, Tensor)):
        return True
    if isinstance(x, (list, tuple)):
        return all(_is_plain(v) for v in x)
    if isinstance(x, dict):
        return all(isinstance(k, (str, int)) and _is_plain(v) for k, v in x.items())
    return False


def require_finite_model(params: Tensor, path: str | Path, what: str = "model") -> None:
    """:class:`CheckpointError` when ``params`` holds NaN/Inf: such a model is never written to ``path``."""
    bad = int((~torch.isfinite(params)).sum())
    if bad:
        raise CheckpointError(f"{path}: refusing to write a {what} with {bad} non-finite (NaN/Inf) values")


def save_model_file(obj: Mapping[str, Any], path: str | Path, params_keys: tuple[str, ...] = ("global_params",)) -> None:
    """Write ``obj`` atomically after checking it is plain (loadable with ``weights_only=True``) and that the
    tensors under ``params_keys`` are finite."""
    if not _is_plain(dict(obj)):
        bad = [k for k, v in obj.items() if not _is_plain(v)]
        raise TypeError(f"{path}: entries {bad} are not tensors or plain containers; cannot be loaded safely")
    for key in params_keys:
        require_finite_model(obj[key], path, key)
    atomic_torch_save(dict(obj), path)


def load_model_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with every failure turned into :class:`CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a {what} file")
    try:
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: the {what} file is empty (damaged); delete it to start over")
        return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:  # objects other than tensors and plain containers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a safe fedshield {what} (it holds objects other than tensors "
                              f"and plain containers; refused to load it: {first[:200]})") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError, AttributeError,
            TypeError, IndexError, MemoryError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: damaged or not a torch {what} file ({type(exc).__name__}: {first[:200]}); "
                              "delete it to start over") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A run's checkpoint: a dict with :data:`CHECKPOINT_KEYS`, a finite global model and a 1-D initial model."""
    state = load_model_file(path, "checkpoint")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a fedshield checkpoint (holds a {type(state).__name__}, not a dict)")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a fedshield checkpoint of this version (missing {missing}); "
                              "delete it to start over")
    for key in ("global_params", "initial_params"):
        t = state[key]
        if not isinstance(t, Tensor) or t.dim() != 1 or not t.is_floating_point():
            raise CheckpointError(f"{path}: '{key}' is not a flat float tensor")
    if state["global_params"].shape != state["initial_params"].shape:
        raise CheckpointError(f"{path}: global and initial models differ in size")
    require_finite_model(state["global_params"], path, "global model (damaged checkpoint)")
    r = state["round"]
    if not (isinstance(r, int) and not isinstance(r, bool) and r >= 0) or not isinstance(state["rows"], list):
        raise CheckpointError(f"{path}: 'round' / 'rows' are damaged")
    if len(state["rows"]) != r:
        raise CheckpointError(f"{path}: holds {len(state['rows'])} metrics rows for {r} rounds (damaged)")
    s = state.get("seconds", 0.0)
    if not isinstance(s, (int, float)) or not math.isfinite(s):
        state["seconds"] = 0.0
    return state


def defense_state(defense: Any) -> dict[str, Any]:
    """The defense's attributes that are tensors or plain containers (its parameters and what it keeps between
    rounds). Models, trainers and callables are rebuilt from the config on resume, not saved."""
    return {k: v for k, v in vars(defense).items() if _is_plain(v)}


def restore_defense_state(defense: Any, state: Mapping[str, Any], path: str | Path) -> None:
    """Put :func:`defense_state` back into a defense freshly built from the same config."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: 'defense_state' is damaged")
    unknown = [k for k in state if k not in vars(defense)]
    if unknown:
        raise CheckpointError(f"{path}: the defense state has attributes {unknown} that {type(defense).__name__} "
                              "does not have (made by another version?)")
    for k, v in state.items():
        setattr(defense, k, v)
