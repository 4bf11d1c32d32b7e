"""Checkpoints and model files: only tensors and plain containers, loaded with ``weights_only=True``.

A run's ``checkpoint.pt`` (its :class:`~fedshield.sim.state.RoundState` after the last finished round, with
what a resume must match) and ``final_model.pt`` hold tensors, numbers, strings, lists and dicts, nothing
else: ``torch.load(..., weights_only=True)`` then refuses any other object, so a planted or tampered file
cannot run code when a run is resumed. A defense's state between rounds (FoolsGold's histories, CRFL's
clipped model) is saved as its plain attributes (:func:`defense_state`) and put back into a defense freshly
built from the config (:func:`restore_defense_state`). Every damaged, foreign or unreadable file raises
:class:`CheckpointError` naming it; a model with NaN/Inf is never written (:func:`require_finite_model`).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from torch import Tensor

from ..core.errors import CheckpointError, ConfigError
from ..core.numeric import is_finite_number, is_int
from ..defenses import Defense
from .output import atomic_torch_save
from .state import RoundState

__all__ = [
    "CheckpointError",
    "CHECKPOINT_KEYS",
    "save_model_file",
    "load_model_file",
    "save_checkpoint",
    "load_checkpoint",
    "resume_state",
    "defense_state",
    "restore_defense_state",
    "require_finite_model",
    "config_diff",
]

CHECKPOINT_KEYS = ("round", "global_params", "initial_params", "rows", "defense_state", "previous_global", "config")


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


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        return {k: v for key, val in data.items() for k, v in _flat(val, f"{prefix}.{key}" if prefix else str(key)).items()}
    return {prefix: data}


def config_diff(saved: Any, current: str, limit: int = 5) -> str:
    """The dotted keys whose values differ between the checkpoint's resolved config and this run's, as
    ``key: saved -> now`` (at most ``limit``); a generic phrase when the saved text is not a YAML mapping."""
    try:
        old, new = yaml.safe_load(str(saved)), yaml.safe_load(current)
    except yaml.YAMLError:
        old = new = None
    if not isinstance(old, dict) or not isinstance(new, dict):
        return "its saved config text differs"
    a, b = _flat(old), _flat(new)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))
    if not keys:
        return "its saved config text differs"
    shown = [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys[:limit]]
    more = f", and {len(keys) - limit} more" if len(keys) > limit else ""
    return "; ".join(shown) + more


def load_checkpoint(path: str | Path, config_text: str | None = None) -> dict[str, Any]:
    """A run's checkpoint: a dict with :data:`CHECKPOINT_KEYS`, a finite global model and a 1-D initial model.
    With ``config_text`` (the resolved config of the run to resume): :class:`ConfigError` if the checkpoint was
    made with another config. Read before any data loads, so a damaged or foreign file is reported at once."""
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
    prev = state["previous_global"]
    if prev is not None and (not isinstance(prev, Tensor) or prev.shape != state["global_params"].shape
                             or not prev.is_floating_point()):
        raise CheckpointError(f"{path}: 'previous_global' is not a flat float tensor of the model's size")
    require_finite_model(state["global_params"], path, "global model (damaged checkpoint)")
    r = state["round"]
    if not (is_int(r) and r >= 0) or not isinstance(state["rows"], list):
        raise CheckpointError(f"{path}: 'round' / 'rows' are damaged")
    if len(state["rows"]) != r:
        raise CheckpointError(f"{path}: holds {len(state['rows'])} metrics rows for {r} rounds (damaged)")
    if not is_finite_number(state.get("seconds")):
        state["seconds"] = 0.0
    if config_text is not None and state["config"] != config_text:
        raise ConfigError(
            f"{Path(path).parent}: the checkpoint was made with a different config ({config_diff(state['config'], config_text)}); "
            "refusing to resume (resume with the same config and --set values, or choose another --out)"
        )
    return state


def save_checkpoint(path: str | Path, state: RoundState, start_params: Tensor, config_text: str) -> None:
    """Write ``state`` atomically with what a resume must match (the start model and the resolved config); the
    defense as its plain state (:func:`defense_state`), the global model only when finite."""
    save_model_file(
        {
            "round": state.round,
            "global_params": state.global_params,
            "previous_global": state.previous_global,
            "defense_state": defense_state(state.defense),
            "rows": state.rows,
            "seconds": state.seconds,
            "initial_params": start_params,
            "config": config_text,
        },
        path,
    )


def resume_state(saved: Mapping[str, Any], path: str | Path, start_params: Tensor, defense: Defense) -> RoundState:
    """The :class:`RoundState` of a checkpoint read by :func:`load_checkpoint`, with its defense state put into
    ``defense`` (freshly built from the config); :class:`ConfigError` if round 1 started from another model."""
    if not torch.equal(saved["initial_params"], start_params):
        raise ConfigError(f"{Path(path).parent}: initial model differs from the checkpoint's; refusing to resume")
    restore_defense_state(defense, saved["defense_state"], path)
    return RoundState(
        round=saved["round"],
        global_params=saved["global_params"],
        defense=defense,
        previous_global=saved["previous_global"],
        rows=saved["rows"],
        seconds=saved["seconds"],
    )


def defense_state(defense: Any) -> dict[str, Any]:
    """The defense's attributes that are tensors or plain containers (its parameters and what it keeps between
    rounds); a defense held by another (the schedule's inner defense, :mod:`fedshield.defenses.schedule`) as its
    own nested state. Models, trainers and callables are rebuilt from the config on resume, not saved."""
    return {k: defense_state(v) if isinstance(v, Defense) else v
            for k, v in vars(defense).items() if isinstance(v, Defense) or _is_plain(v)}


def restore_defense_state(defense: Any, state: Mapping[str, Any], path: str | Path) -> None:
    """Put :func:`defense_state` back into a defense freshly built from the same config (a held defense's
    nested state into that defense)."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: 'defense_state' is damaged")
    unknown = [k for k in state if k not in vars(defense)]
    if unknown:
        raise CheckpointError(f"{path}: the defense state has attributes {unknown} that {type(defense).__name__} "
                              "does not have (made by another version?)")
    for k, v in state.items():
        held = getattr(defense, k)
        if isinstance(held, Defense):
            restore_defense_state(held, v, path)
        else:
            setattr(defense, k, v)
