"""Bad-input corpus, sweeps (API level; the CLI cases are in test_bad_inputs_cli.py): malformed grid files and
damaged sweep folders are ConfigError / OutputError naming the file and section, before any run starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from badinput import tiny_config, write_yaml
from fedshield.config import ConfigError
from fedshield.core.errors import OutputError
from fedshield.report.results import collect_results
from fedshield.sweep import expand, load_sweep, run_sweep


def _grid(tmp_path: Path, **data) -> Path:
    tiny_config(tmp_path)
    return write_yaml(tmp_path / "grid.yaml", {"base": "tiny.yaml", "grid": {"seed": [0]}, **data})


@pytest.mark.parametrize(
    "section, value, fragment",
    [
        ("labels", ["seed"], "'labels'"),
        ("labels", {"seed": "zero"}, "'labels'"),
        ("profiles", {"fast": 3}, "'profiles'"),
        ("table", ["rows"], "'table'"),
        ("reference", 12, "'reference'"),
        ("base", [1, 2], "'base'"),
        ("grid", {"seed": []}, "'grid'"),
        ("grid", [["seed", 0]], "'grid'"),
    ],
)
def test_malformed_grid_sections_name_the_section(tmp_path, section, value, fragment):
    grid = _grid(tmp_path, **{section: value})
    with pytest.raises(ConfigError, match=fragment) as err:
        load_sweep(grid)
    assert str(grid) in str(err.value)


def test_grid_keys_must_be_text(tmp_path):
    grid = tmp_path / "grid.yaml"
    tiny_config(tmp_path)
    grid.write_text("base: tiny.yaml\ngrid:\n  1: [a]\n")
    with pytest.raises(ConfigError, match="grid keys must be dotted config keys"):
        load_sweep(grid)


def test_non_finite_value_in_a_profile_names_the_key(tmp_path):
    spec = load_sweep(_grid(tmp_path, profiles={"fast": {"train.lr": float("nan")}}))
    with pytest.raises(ConfigError, match=r"train\.lr"):
        expand(spec, "fast")


def test_unknown_profile_lists_the_available_ones(tmp_path):
    spec = load_sweep(_grid(tmp_path, profiles={"fast": {"rounds": 1}}))
    with pytest.raises(ConfigError, match=r"unknown profile 'slow'; available: \['fast'\]"):
        expand(spec, "slow")


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True])
def test_run_sweep_jobs_through_the_api(tmp_path, jobs):
    with pytest.raises(ConfigError, match="jobs="):
        run_sweep(load_sweep(_grid(tmp_path)), tmp_path / "s", jobs=jobs, log=lambda _m: None)
    assert not (tmp_path / "s").exists()


def test_collect_results_names_a_damaged_summary(tmp_path):
    d = tmp_path / "sw"
    (d / "runs" / "a").mkdir(parents=True)
    (d / "sweep.json").write_text(json.dumps({"grid": {"seed": [0]}, "runs": [{"id": "a", "labels": {"seed": "0"}}]}))
    (d / "runs" / "a" / "summary.json").write_text('{"final_ma": 0.5,')
    with pytest.raises(OutputError, match=str(d / "runs" / "a" / "summary.json")):
        collect_results(d)


def test_collect_results_sweep_json_without_runs(tmp_path):
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(OutputError, match="damaged sweep index"):
        collect_results(tmp_path)


def test_sweep_json_that_is_not_an_object_on_resume(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_text("[]")
    with pytest.raises(OutputError, match=str(out / "sweep.json")):
        run_sweep(load_sweep(_grid(tmp_path)), out, log=lambda _m: None)
