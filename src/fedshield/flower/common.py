"""Per-process cache of the fedshield :class:`Setup` a run config describes (no Flower import)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..config import ExperimentConfig, dump_config
from ..sim import Setup, build_setup
from .runconfig import experiment_from_run_config

__all__ = ["setup_for_run_config"]

_CACHE: dict[str, Setup] = {}


def setup_for_run_config(run_config: Mapping[str, Any], base_dir: str | Path | None = None) -> tuple[ExperimentConfig, Setup]:
    """The experiment and its Setup (dataset, partition, model, attackers), built once per process and config.

    Simulation workers reuse their process across messages; a deployed SuperNode starts a fresh ClientApp
    process per message, which rebuilds it (the synthetic data takes ~0.1 s).
    """
    cfg = experiment_from_run_config(run_config, base_dir)
    key = dump_config(cfg)
    if key not in _CACHE:
        _CACHE.clear()  # one experiment per process at a time
        _CACHE[key] = build_setup(cfg)
    return cfg, _CACHE[key]
