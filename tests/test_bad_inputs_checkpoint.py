"""Bad-input corpus, checkpoints: ``--resume`` on an empty, truncated, foreign or planted ``checkpoint.pt`` is a
CheckpointError naming the file, found before any data loads; a planted pickle never runs its code; a
good checkpoint still resumes to the same result as an uninterrupted run."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from badinput import TINY, assert_clear_error, assert_no_non_finite_models, tiny_config
from fedshield.config import config_from_dict
from fedshield.sim import run_experiment
from fedshield.sim.checkpoint import CheckpointError, load_checkpoint, load_model_file, save_model_file


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-round tiny run (its checkpoint.pt is the template the damaged copies start from)."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    run_experiment(config_from_dict({**TINY, "rounds": 2, "defense": {"name": "foolsgold"}}), out, progress=False)
    return out


def _resume_with(tmp_path: Path, capsys, content: bytes, *fragments: str) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(content)
    assert_clear_error(capsys, ["run", str(tiny_config(tmp_path)), "--out", str(out), "--resume", "--quiet"],
                       str(out / "checkpoint.pt"), *fragments)
    assert not (out / "summary.json").exists()


def test_resume_empty_checkpoint(tmp_path, capsys):
    _resume_with(tmp_path, capsys, b"", "empty")


def test_resume_truncated_checkpoint(tmp_path, capsys, finished):
    raw = (finished / "checkpoint.pt").read_bytes()
    _resume_with(tmp_path, capsys, raw[: len(raw) // 2], "damaged")


def test_resume_text_file_as_checkpoint(tmp_path, capsys):
    _resume_with(tmp_path, capsys, b"round: 3\n", "damaged")


def test_resume_foreign_torch_file(tmp_path, capsys):
    """A model's state dict (a valid torch file, but not a fedshield checkpoint)."""
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.randn(4, 1, 3, 3)}, foreign)
    _resume_with(tmp_path, capsys, foreign.read_bytes(), "not a fedshield checkpoint")


def test_resume_bare_tensor_file(tmp_path, capsys):
    t = tmp_path / "t.pt"
    torch.save(torch.randn(10), t)
    _resume_with(tmp_path, capsys, t.read_bytes(), "not a fedshield checkpoint", "Tensor")


def test_resume_old_format_checkpoint_with_a_pickled_object(tmp_path, capsys):
    """The old format pickled the defense object itself; weights_only loading refuses it."""
    from fedshield.defenses import build_defense

    old = tmp_path / "old.pt"
    torch.save({"round": 1, "global_params": torch.zeros(3), "defense": build_defense("fedavg")}, old)
    _resume_with(tmp_path, capsys, old.read_bytes(), "not a safe fedshield checkpoint")


class _Planted:
    """Unpickling this would create the marker file: code execution from a data file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_planted_pickle_does_not_run_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    planted = tmp_path / "planted.pt"
    torch.save({"round": 1, "global_params": torch.zeros(3), "x": _Planted(str(marker))}, planted)
    with open(tmp_path / "plain.pkl", "wb") as f:  # the same payload as a plain pickle
        pickle.dump(_Planted(str(marker)), f, protocol=2)
    _resume_with(tmp_path, capsys, planted.read_bytes(), "not a safe fedshield checkpoint")
    with pytest.raises(CheckpointError):
        load_model_file(tmp_path / "plain.pkl")
    assert not marker.exists()


def test_checkpoint_with_non_finite_global_model(tmp_path, finished):
    state = torch.load(finished / "checkpoint.pt", weights_only=True)
    state["global_params"][0] = float("nan")
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(path)


def test_checkpoint_with_rows_and_round_out_of_step(tmp_path, finished):
    state = torch.load(finished / "checkpoint.pt", weights_only=True)
    state["rows"] = state["rows"][:1]
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="metrics rows"):
        load_checkpoint(path)


def test_a_folder_named_checkpoint_pt(tmp_path):
    (tmp_path / "checkpoint.pt").mkdir()
    with pytest.raises(CheckpointError, match="folder"):
        load_model_file(tmp_path / "checkpoint.pt")


def test_a_non_finite_model_is_never_written(tmp_path):
    with pytest.raises(CheckpointError, match="non-finite"):
        save_model_file({"global_params": torch.tensor([1.0, float("inf")])}, tmp_path / "final_model.pt")
    assert not (tmp_path / "final_model.pt").exists()


def test_damaged_pretrain_cache_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSHIELD_CACHE", str(tmp_path / "cache"))
    from fedshield.sim.pretrain import pretrain_cache_dir, pretrain_key, pretrained_params
    from fedshield.sim.setup import build_setup

    setup = build_setup(config_from_dict({**TINY, "pretrain": {"rounds": 1}}))
    path = pretrain_cache_dir() / f"{pretrain_key(setup)}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=str(path)):
        pretrained_params(setup, log=lambda _m: None)


def test_checkpoints_hold_only_plain_data_and_resume_exactly(tmp_path, finished):
    """The new format: weights_only loading works, FoolsGold's history survives a resume, the result matches."""
    assert assert_no_non_finite_models(finished) == 2
    state = load_checkpoint(finished / "checkpoint.pt")
    assert set(state["defense_state"]["history"]) and state["round"] == 2
    cfg = config_from_dict({**TINY, "rounds": 2, "defense": {"name": "foolsgold"}})
    part = tmp_path / "part"
    run_experiment(config_from_dict({**TINY, "rounds": 1, "defense": {"name": "foolsgold"}}), part, progress=False)
    # continue the 1-round run's checkpoint as round 2 of the 2-round config
    ck = torch.load(part / "checkpoint.pt", weights_only=True)
    ck["config"] = load_checkpoint(finished / "checkpoint.pt")["config"]
    torch.save(ck, part / "checkpoint.pt")
    (part / "summary.json").unlink()
    resumed = run_experiment(cfg, part, resume=True, progress=False, log=lambda _m: None)
    whole = json.loads((finished / "summary.json").read_text())
    assert resumed["final_ma"] == whole["final_ma"]
    a = torch.load(part / "final_model.pt", weights_only=True)["global_params"]
    b = torch.load(finished / "final_model.pt", weights_only=True)["global_params"]
    assert torch.equal(a, b)


def test_resume_with_a_different_config_names_the_keys_that_differ(tmp_path, capsys, finished):
    """An interrupted run resumed with other settings is refused, naming each changed key (it used to say only
    "a different config")."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes((finished / "checkpoint.pt").read_bytes())
    cfg = tiny_config(tmp_path, rounds=2, defense={"name": "foolsgold"})
    err = assert_clear_error(capsys, ["run", str(cfg), "--out", str(out), "--resume", "--quiet", "--set", "train.lr=0.1",
                                      "--set", "seed=3"],
                             "different config", "seed: 0 -> 3", "train.lr: 0.05 -> 0.1", "refusing to resume")
    assert "name:" not in err  # only the keys that differ
    assert not (out / "summary.json").exists()
