"""Bad-input corpus, CLI: every subcommand (run, sweep, report, demo, list) given broken files, values and
folders fails with exit code 2 and one ``fedshield: error: ...`` message naming the file or key; no traceback.
Everything here fails before any training, so each case takes milliseconds (the CLI runs in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from badinput import TINY, assert_clear_error, cli, tiny_config, write_yaml
from fedshield.cli import is_user_error


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return tiny_config(tmp_path)


# ------------------------------------------------------------------------------------------------ run: files


def test_run_missing_config(tmp_path, capsys):
    assert_clear_error(capsys, ["run", str(tmp_path / "nope.yaml")], "config file not found", "nope.yaml")


def test_run_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rounds: 2\ntrain: {lr: 0.1\nseed: 1\n")
    assert_clear_error(capsys, ["run", str(bad)], str(bad), "invalid YAML at line 3")


def test_run_tab_indentation_is_a_yaml_error(tmp_path, capsys):
    bad = tmp_path / "tabs.yaml"
    bad.write_text("train:\n\tlr: 0.1\n")
    assert_clear_error(capsys, ["run", str(bad)], str(bad), "invalid YAML at line 2")


def test_run_directory_as_config(tmp_path, capsys):
    assert_clear_error(capsys, ["run", str(tmp_path)], str(tmp_path), "is a folder")


def test_run_binary_file_as_config(tmp_path, capsys):
    binary = tmp_path / "model.pt"
    torch.save({"w": torch.randn(50)}, binary)
    assert_clear_error(capsys, ["run", str(binary)], str(binary), "not a text file")


def test_run_config_whose_top_level_is_a_list(tmp_path, capsys):
    lst = write_yaml(tmp_path / "list.yaml", [{"rounds": 1}])
    assert_clear_error(capsys, ["run", str(lst)], str(lst), "top level", "mapping")


def test_run_config_of_control_characters(tmp_path, capsys):
    bad = tmp_path / "ctrl.yaml"
    bad.write_text("rounds: 1\x07\n")
    assert_clear_error(capsys, ["run", str(bad)], str(bad), "invalid YAML")


# ------------------------------------------------------------------------------------------------ run: --set


def test_set_value_with_yaml_error(cfg, capsys):
    assert_clear_error(capsys, ["run", str(cfg), "--set", "train={lr: 0.1"], "--set train={lr: 0.1", "not valid YAML")


def test_set_without_equals(cfg, capsys):
    assert_clear_error(capsys, ["run", str(cfg), "--set", "rounds"], "--set expects key=value", "'rounds'")


def test_set_below_a_scalar(cfg, capsys):
    assert_clear_error(capsys, ["run", str(cfg), "--set", "rounds.x=1"], "'rounds' is not a section")


def test_set_unknown_key(cfg, capsys):
    assert_clear_error(capsys, ["run", str(cfg), "--set", "train.lrr=0.1"], "train.lrr: unknown key")


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=.inf", "train.lr"),
        ("train.lr=inf", "train.lr"),  # a string "inf" that pydantic would otherwise turn into a float
        ("train.momentum=.nan", "train.momentum"),
        ("attack.trigger.value=.nan", "attack.trigger.value"),
        ("defense.params={server_lr: .inf}", "defense.params.server_lr"),
        ("train.milestones=[0.5, .nan]", "train.milestones[1]"),
    ],
)
def test_set_non_finite_value_names_the_key(cfg, capsys, override, key):
    assert_clear_error(capsys, ["run", str(cfg), "--set", override], key)


@pytest.mark.parametrize("device", ["banana", "cuda9", "gpu:0"])
def test_invalid_device_name(cfg, capsys, device):
    assert_clear_error(capsys, ["run", str(cfg), "--set", f"device={device}"], "device", repr(device))


def test_unavailable_cuda_device_found_before_training(cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "o"
    assert_clear_error(capsys, ["run", str(cfg), "--set", "device=cuda:1", "--out", str(out)], "cuda:1", "not available")
    assert not (out / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------------------ run: --out


def test_out_is_a_file(cfg, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert_clear_error(capsys, ["run", str(cfg), "--out", str(blocker)], str(blocker), "is a file")


def test_out_below_a_file(cfg, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert_clear_error(capsys, ["run", str(cfg), "--out", str(blocker / "run")], str(blocker / "run"), "is a file")


def test_out_that_cannot_be_created(cfg, capsys):
    assert_clear_error(capsys, ["run", str(cfg), "--out", "/proc/fedshield-run"], "/proc/fedshield-run", "cannot be created")


def test_out_is_checked_before_the_data_loads(tmp_path, capsys):
    """The data root does not exist either: the --out problem must be the one reported (found first)."""
    cfg = tiny_config(tmp_path, data={"dataset": "fashion_mnist", "root": str(tmp_path / "no-data")})
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    err = assert_clear_error(capsys, ["run", str(cfg), "--out", str(blocker)], str(blocker))
    assert "no-data" not in err


def test_explicit_data_root_that_does_not_exist(tmp_path, capsys):
    cfg = tiny_config(tmp_path, data={"dataset": "fashion_mnist", "root": str(tmp_path / "no-data")})
    assert_clear_error(capsys, ["run", str(cfg), "--out", str(tmp_path / "o")], str(tmp_path / "no-data"),
                       "does not exist", "FEDSHIELD_DATA")


def test_resume_on_an_empty_checkpoint(cfg, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"")
    assert_clear_error(capsys, ["run", str(cfg), "--out", str(out), "--resume", "--quiet"],
                       str(out / "checkpoint.pt"), "empty")


def test_unfinished_run_without_resume(cfg, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"junk")
    assert_clear_error(capsys, ["run", str(cfg), "--out", str(out)], "unfinished run", "--resume")


# ------------------------------------------------------------------------------------------------ sweep


def _grid(tmp_path: Path, **data) -> Path:
    tiny_config(tmp_path)
    return write_yaml(tmp_path / "grid.yaml", {"base": "tiny.yaml", "grid": {"seed": [0]}, **data})


@pytest.mark.parametrize("jobs", ["0", "-2", "two"])
def test_sweep_jobs_must_be_a_positive_integer(tmp_path, capsys, jobs):
    assert_clear_error(capsys, ["sweep", str(_grid(tmp_path)), "--jobs", jobs, "--out", str(tmp_path / "s")], "--jobs")
    assert not (tmp_path / "s").exists()


def test_sweep_grid_whose_top_level_is_a_list(tmp_path, capsys):
    grid = write_yaml(tmp_path / "grid.yaml", [{"seed": [0, 1]}])
    assert_clear_error(capsys, ["sweep", str(grid)], str(grid), "top level", "mapping")


def test_sweep_grid_yaml_syntax_error(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: tiny.yaml\ngrid:\n  seed: [0, 1\n")
    assert_clear_error(capsys, ["sweep", str(grid)], str(grid), "invalid YAML at line")


def test_sweep_base_config_with_yaml_error_names_the_base(tmp_path, capsys):
    grid = _grid(tmp_path)
    (tmp_path / "tiny.yaml").write_text("rounds: [1\n")
    assert_clear_error(capsys, ["sweep", str(grid)], str(tmp_path / "tiny.yaml"), "invalid YAML")


def test_sweep_base_config_missing(tmp_path, capsys):
    grid = write_yaml(tmp_path / "grid.yaml", {"base": "missing.yaml", "grid": {"seed": [0]}})
    assert_clear_error(capsys, ["sweep", str(grid)], "base config not found", "missing.yaml")


def test_sweep_grid_values_not_a_list(tmp_path, capsys):
    grid = _grid(tmp_path, grid={"seed": 3})
    assert_clear_error(capsys, ["sweep", str(grid)], str(grid), "'grid' must map")


def test_sweep_grid_point_with_non_finite_value(tmp_path, capsys):
    grid = _grid(tmp_path, grid={"train.lr": [0.1, float("inf")]})
    assert_clear_error(capsys, ["sweep", str(grid), "--out", str(tmp_path / "s")], "grid point", "train.lr")


def test_sweep_profiles_not_mappings(tmp_path, capsys):
    grid = _grid(tmp_path, profiles={"fast": ["rounds=1"]})
    assert_clear_error(capsys, ["sweep", str(grid)], str(grid), "'profiles'")


def test_sweep_corrupt_sweep_json_in_out(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_text('{"name": "x", "base": ')
    assert_clear_error(capsys, ["sweep", str(_grid(tmp_path)), "--out", str(out)], str(out / "sweep.json"), "damaged")


def test_sweep_out_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert_clear_error(capsys, ["sweep", str(_grid(tmp_path)), "--out", str(blocker)], str(blocker), "is a file")


# ------------------------------------------------------------------------------------------------ report


def _sweep_folder(tmp_path: Path) -> Path:
    """A finished-looking sweep folder with one run (written by hand: no training needed)."""
    d = tmp_path / "sw"
    (d / "runs" / "seed=0").mkdir(parents=True)
    (d / "sweep.json").write_text(json.dumps({
        "name": "sw", "grid": {"seed": [0]}, "table": {"rows": [], "columns": ["seed"]},
        "runs": [{"id": "seed=0", "labels": {"seed": "0"}, "overrides": {"seed": 0}}]}))
    (d / "runs" / "seed=0" / "summary.json").write_text(json.dumps({"final_ma": 0.5, "aasr": 0.1, "rounds_done": 1,
                                                                     "seed": 0}))
    return d


def test_report_folder_without_sweep_json(tmp_path, capsys):
    assert_clear_error(capsys, ["report", str(tmp_path)], str(tmp_path), "not a sweep folder")


def test_report_corrupt_sweep_json(tmp_path, capsys):
    d = _sweep_folder(tmp_path)
    (d / "sweep.json").write_text("{not json")
    assert_clear_error(capsys, ["report", str(d)], str(d / "sweep.json"), "damaged")


def test_report_sweep_json_of_the_wrong_shape(tmp_path, capsys):
    d = _sweep_folder(tmp_path)
    (d / "sweep.json").write_text("[1, 2, 3]")
    assert_clear_error(capsys, ["report", str(d)], str(d / "sweep.json"), "damaged")


def test_report_corrupt_summary_json(tmp_path, capsys):
    d = _sweep_folder(tmp_path)
    summary = d / "runs" / "seed=0" / "summary.json"
    summary.write_bytes(b"\xff\xfe garbage")
    assert_clear_error(capsys, ["report", str(d)], str(summary), "damaged")


def test_report_reference_with_a_non_number(tmp_path, capsys):
    d = _sweep_folder(tmp_path)
    ref = tmp_path / "ref.csv"
    ref.write_text("seed,metric,value\n0,aasr,twelve\n")
    assert_clear_error(capsys, ["report", str(d), "--reference", str(ref)], str(ref), "row 2")


def test_report_reference_missing(tmp_path, capsys):
    d = _sweep_folder(tmp_path)
    assert_clear_error(capsys, ["report", str(d), "--reference", str(tmp_path / "nope.csv")], "nope.csv", "not found")


def test_report_seeds_folder_that_is_not_a_sweep(tmp_path, capsys):
    d = _sweep_folder(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    assert_clear_error(capsys, ["report", str(d), "--seeds", str(other)], str(other), "not a sweep folder")


def test_report_seeds_sweep_without_the_table_keys(tmp_path, capsys):
    d = _sweep_folder(tmp_path)
    other = tmp_path / "other"
    (other / "runs" / "r").mkdir(parents=True)
    (other / "sweep.json").write_text(json.dumps({"name": "o", "grid": {"lr": [1]},
                                                  "runs": [{"id": "r", "labels": {"lr": "1"}}]}))
    (other / "runs" / "r" / "summary.json").write_text(json.dumps({"seed": 1, "aasr": 0.2}))
    assert_clear_error(capsys, ["report", str(d), "--seeds", str(other)], "no label for table key(s) ['seed']")


@pytest.mark.parametrize("threshold", ["nan", "-1", "inf"])
def test_report_threshold_must_be_finite_and_non_negative(tmp_path, capsys, threshold):
    assert_clear_error(capsys, ["report", str(_sweep_folder(tmp_path)), "--threshold", threshold], "--threshold")


# ------------------------------------------------------------------------------------------------ demo, list


def test_demo_config_yaml_error(tmp_path, capsys):
    bad = tmp_path / "demo.yaml"
    bad.write_text("rounds: [1\n")
    assert_clear_error(capsys, ["demo", "--config", str(bad), "--out", str(tmp_path / "d")], str(bad), "invalid YAML")


def test_demo_bad_override_fails_before_any_run(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    out = tmp_path / "d"
    assert_clear_error(capsys, ["demo", "--config", str(cfg), "--set", "train.lr=-1", "--out", str(out)], "train.lr")
    assert not out.exists()


def test_demo_out_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    cfg = tiny_config(tmp_path, data={"dataset": "synthetic", "server_holdout": 20})  # valid for the demo's FLAIN run
    assert_clear_error(capsys, ["demo", "--config", str(cfg), "--out", str(blocker)], str(blocker), "is a file")


def test_list_unknown_kind(capsys):
    assert_clear_error(capsys, ["list", "weapons"], "invalid choice", "'weapons'")


# ------------------------------------------------------------------------------------------------ main's rule


def test_library_bugs_keep_their_traceback():
    """Only the project's own errors become one line; an error raised inside a library is a bug."""
    from fedshield.config import ConfigError

    try:
        torch.zeros(2).view(3)
    except RuntimeError as exc:
        assert not is_user_error(exc)
    try:
        int("x")
    except ValueError as exc:  # raised here, in the tests, not in fedshield
        assert not is_user_error(exc)
    assert is_user_error(ConfigError("bad key"))


def test_a_good_tiny_run_still_exits_0(tmp_path, capsys):
    rc, out, err = cli(capsys, ["run", str(tiny_config(tmp_path)), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 0 and "final_ma=" in out and "Traceback" not in err
    assert TINY["rounds"] == json.loads((tmp_path / "o" / "summary.json").read_text())["rounds_done"]


# ------------------------------------------------------------------------------------------------ run: settings


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["attack.name=pixel", "attack.num_attackers=1", "attack.trigger={pattern: null, pixels: [[100, 100]]}"],
         "trigger pixel (100, 100) lies outside a 28×28 image"),
        (["attack.name=dba", "attack.num_attackers=1", "attack.attacker_ids=[99]"], "attack.attacker_ids [99]"),
        (["attack.name=edge_case", "attack.num_attackers=1", "attack.params={source_class: 50}"], "source_class=50"),
        (["defense.name=nope"], "unknown defense 'nope'"),
        (["defense.params={bogus: 1}"], "bogus"),
        (["defense.name=flame", "defense.params={lam: abc}"], "lam='abc' is invalid"),
        (["defense.name=krum", "defense.params={f: 5}"], "needs at least 13 clients per round, but clients_per_round=3"),
        (["post_training=flain"], "post_training 'flain' needs an auxiliary set: set data.server_holdout > 0"),
    ],
    ids=["trigger-pixel", "attacker-id", "source-class", "defense-name", "defense-param", "param-type",
         "krum-f", "flain-holdout"],
)
def test_impossible_settings_name_the_setting(cfg, tmp_path, capsys, overrides, fragment):
    argv = ["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]
    for o in overrides:
        argv += ["--set", o]
    assert_clear_error(capsys, argv, fragment)
