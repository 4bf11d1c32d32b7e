"""Shared helpers of the bad-input corpus (tests/test_bad_inputs_*.py): a tiny synthetic config, the CLI run
in-process with its exit code and stderr, and the checks every case makes (a one-line error, no traceback,
no non-finite model on disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from fedshield.cli import main

TINY: dict[str, Any] = {
    "model": "small_cnn",
    "num_clients": 6,
    "clients_per_round": 3,
    "rounds": 1,
    "workers": 1,
    "data": {"dataset": "synthetic"},
    "train": {"epochs": 1, "lr": 0.05},
}


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def tiny_config(tmp_path: Path, name: str = "tiny.yaml", **sections: Any) -> Path:
    """TINY with top-level keys replaced by ``sections``, written to ``tmp_path/name``."""
    return write_yaml(tmp_path / name, {**TINY, **sections})


def cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """``fedshield ARGV`` in this process: (exit code, stdout, stderr). argparse errors exit with SystemExit."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_clear_error(capsys, argv: list[str], *fragments: str, rc: int = 2) -> str:
    """The command fails with exit code ``rc``, no traceback, and stderr names every fragment."""
    code, _out, err = cli(capsys, argv)
    assert code == rc, (code, err)
    assert "Traceback" not in err, err
    assert "error" in err, err
    for f in fragments:
        assert f in err, (f, err)
    return err


def assert_no_non_finite_models(folder: Path) -> int:
    """Every ``*.pt`` under ``folder`` loads with weights_only=True and every float tensor in it is finite;
    returns how many files were checked."""
    count = 0
    for path in folder.rglob("*.pt"):
        state = torch.load(path, weights_only=True)
        tensors = [v for v in state.values() if isinstance(v, torch.Tensor)] if isinstance(state, dict) else [state]
        for t in tensors:
            if t.is_floating_point():
                assert bool(torch.isfinite(t).all()), path
        count += 1
    return count
