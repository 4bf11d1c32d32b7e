"""Sweeps: grid expansion, a sweep killed midway resumes with only the missing runs, the report's layout."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedshield.config import ConfigError
from fedshield.report import summarize_sweep, write_report
from fedshield.report.table import build_table, differences, ranking_check, render_markdown
from fedshield.sweep import expand, load_sweep, run_sweep

BASE = {
    "model": "small_cnn",
    "num_clients": 6,
    "clients_per_round": 4,
    "rounds": 3,
    "workers": 1,
    "data": {"dataset": "synthetic"},
    "train": {"lr": 0.05, "epochs": 1, "batch_size": 32},
    "attack": {"name": "dba", "num_attackers": 1, "start_round": 1, "train": {"lr": 0.05, "epochs": 1}},
    "eval": {"every": 1},
}


def _grid(tmp_path: Path, **extra) -> Path:
    spec = {
        "name": "tiny",
        "base": BASE,
        "grid": {
            "attack.poison_per_batch": [5, 10],
            "defense.name": ["fedavg", "flame"],
        },
        "labels": {"defense.name": {"fedavg": "FedAvg", "flame": "FLAME"}},
        "profiles": {"short": {"rounds": 2}},
        "table": {"rows": ["defense.name"], "columns": ["attack.poison_per_batch"], "metrics": ["aasr", "final_ma"],
                  "compare": {"by": "defense.name", "metric": "aasr", "better": ["FLAME"], "than": ["FedAvg"]}},
        **extra,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_expand_grid_ids_labels_and_profile(tmp_path):
    spec = load_sweep(_grid(tmp_path))
    runs = expand(spec)
    assert [r.run_id for r in runs] == [
        "poison_per_batch=5__name=FedAvg", "poison_per_batch=5__name=FLAME",
        "poison_per_batch=10__name=FedAvg", "poison_per_batch=10__name=FLAME",
    ]
    assert runs[1].config["defense"]["name"] == "flame" and runs[1].config["attack"]["poison_per_batch"] == 5
    assert runs[1].config["attack"]["num_attackers"] == 1  # the rest of the section is kept
    assert all(r.config["rounds"] == 2 for r in expand(spec, "short"))
    with pytest.raises(ConfigError, match="unknown profile 'long'"):
        expand(spec, "long")


def test_section_values_merge_and_bad_points_are_named(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "grid": {"data": [
        {"partition": "iid", "_label": "IID"}, {"partition": "dirichlet", "alpha": 0.5, "_label": "Dir 0.5"}]}}))
    runs = expand(load_sweep(path))
    assert runs[1].config["data"] == {"dataset": "synthetic", "partition": "dirichlet", "alpha": 0.5}
    assert runs[1].labels == {"data": "Dir 0.5"}
    path.write_text(yaml.safe_dump({"base": BASE, "grid": {"train.lr": [0.1, -1]}}))
    with pytest.raises(ConfigError, match=r"(?s)grid point lr=-1: .*train\.lr"):
        expand(load_sweep(path))


def test_set_changes_the_shared_base_for_every_run(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({**BASE, "train": {"lr": 0.1, "epochs": 2}}))
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", "set": {"rounds": 7, "train.epochs": 3},
                                    "grid": {"seed": [0, 1]}}))
    runs = expand(load_sweep(path))
    assert [r.config["rounds"] for r in runs] == [7, 7]
    assert all(r.config["train"] == {"lr": 0.1, "epochs": 3} for r in runs)  # the rest of the section is kept
    assert [r.run_id for r in runs] == ["seed=0", "seed=1"]  # fixed changes do not enter the run ids
    assert yaml.safe_load(base.read_text())["train"]["epochs"] == 2  # the base file is untouched
    path.write_text(yaml.safe_dump({"base": BASE, "set": ["rounds=7"], "grid": {"seed": [0]}}))
    with pytest.raises(ConfigError, match="'set' must map dotted config keys"):
        load_sweep(path)
    path.write_text(yaml.safe_dump({"base": BASE, "set": {"rounds.x": 7}, "grid": {"seed": [0]}}))
    with pytest.raises(ConfigError, match="set: rounds.x: 'rounds' is not a section"):
        load_sweep(path)


def test_every_bad_grid_point_is_listed_before_anything_runs(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "grid": {
        "defense": [{"name": "fedavg", "_label": "ok"}, {"name": "flmae", "_label": "typo"},
                    {"name": "flame", "params": {"lam": -5}, "_label": "neg"}],
        "rounds": [1, 2]}}))
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError) as err:
        run_sweep(load_sweep(path), out, log=lambda m: None)
    msg = str(err.value)
    assert msg.startswith("4 of 6 grid points are invalid (nothing was run)")
    for bad in ("defense=typo__rounds=1", "defense=typo__rounds=2", "defense=neg__rounds=1", "defense=neg__rounds=2"):
        assert f"grid point {bad}:" in msg
    assert "defense=ok" not in msg and "unknown defense 'flmae'" in msg and "lam=-5 is invalid" in msg
    assert not out.exists()


def test_partial_sweep_resumes_only_missing_runs(tmp_path):
    grid = _grid(tmp_path)
    out = tmp_path / "sweep"
    # a first sitting that stops after two runs (through the CLI, in its own process)
    proc = subprocess.run(
        [sys.executable, "-m", "fedshield.cli", "sweep", str(grid), "--out", str(out), "--jobs", "1", "--max-runs", "2"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summaries = lambda: sorted(out.glob("runs/*/summary.json"))  # noqa: E731
    finished = {p: p.stat().st_mtime_ns for p in summaries()}
    assert [p.parent.name for p in finished] == ["poison_per_batch=5__name=FLAME", "poison_per_batch=5__name=FedAvg"]
    logs: list[str] = []
    result = run_sweep(load_sweep(grid), out, jobs=2, log=logs.append)
    assert result["ran"] == 2 and not result["failed"]
    assert "2 already finished, 2 to run" in logs[0]
    assert len(summaries()) == 4
    for p, mtime in finished.items():
        assert p.stat().st_mtime_ns == mtime  # finished runs were not run again
    assert "time per round" in summarize_sweep(out)
    again: list[str] = []
    assert run_sweep(load_sweep(grid), out, jobs=1, log=again.append)["ran"] == 0
    with pytest.raises(ConfigError, match="another base config or profile"):
        run_sweep(load_sweep(grid), out, jobs=1, profile="short", log=lambda m: None)
    summary_csv = (out / "summary.csv").read_text().splitlines()
    assert summary_csv[0].startswith("id,attack.poison_per_batch,defense.name,final_ma") and len(summary_csv) == 5

    # the report, with a reference table in the long CSV format
    ref = tmp_path / "ref.csv"
    ref.write_text("# a comment\ndefense.name,attack.poison_per_batch,metric,value\n"
                   "FedAvg,5,aasr,90\nFLAME,5,aasr,1.5\nFedAvg,10,final_ma,0\n")
    t = build_table(out, ref)
    assert t["rows"] == [("FedAvg",), ("FLAME",)] and t["cols"] == [("5",), ("10",)]
    md = render_markdown(t).splitlines()
    assert md[0] == "| defense.name | 5 AASR | 5 MA | 10 AASR | 10 MA |"
    mine = json.loads((out / "runs" / "poison_per_batch=5__name=FedAvg" / "summary.json").read_text())["aasr"] * 100
    assert md[2].startswith(f"| FedAvg | {mine:.2f} (90.00, {mine - 90:+.1f}) |")
    assert "(–)" in md[2]  # no paper value for that cell
    diffs = differences(t, threshold=10)
    assert (("FedAvg",), ("10",), "final_ma") in [(d[0], d[1], d[2]) for d in diffs]
    rc = ranking_check(t)
    assert rc["settings"] == 2 and rc["paper"] == 1  # paper values exist only for PDR 5
    assert rc["pairs"] == 2 and rc["pairs_paper"] == 1
    # summary.csv left stale (one run only, as after a later one-run sweep into the folder): the report rewrites it
    (out / "summary.csv").write_text("\n".join(summary_csv[:2]) + "\n")
    paths = write_report(out, ref)
    assert paths["ba"].exists() and paths["ma"].exists() and "## Ranking" in paths["report"].read_text()
    assert paths["summary"].read_text().splitlines() == summary_csv

    # a reference without one of the table's keys: declared in reference_keys, one value beside every label of it
    ref_no_pdr = tmp_path / "ref_no_pdr.csv"
    ref_no_pdr.write_text("defense.name,metric,value\nFedAvg,aasr,70\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['attack.poison_per_batch'\]"):
        build_table(out, ref_no_pdr)
    index_path = out / "sweep.json"
    index = json.loads(index_path.read_text())
    index["table"] = {**(index.get("table") or {}), "reference_keys": ["defense.name"]}
    index_path.write_text(json.dumps(index))
    t = build_table(out, ref_no_pdr)
    assert [t["cells"][(("FedAvg",), (c,), "aasr")][1] for c in ("5", "10")] == [70.0, 70.0]
    assert math.isnan(t["cells"][(("FLAME",), ("5",), "aasr")][1])
    index["table"]["reference_keys"] = ["seed"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="reference_keys"):
        build_table(out, ref_no_pdr)


def test_warm_starts_are_grouped_by_what_shapes_them(tmp_path):
    from fedshield.sweep import _pretrain_groups

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"base": {**BASE, "pretrain": {"rounds": 2}}, "grid": {
        "defense.name": ["fedavg", "median", "flame"],
        "attack.poison_per_batch": [5, 10],
        "data": [{"partition": "iid", "_label": "IID"}, {"partition": "deg_niid", "fraction": 0.5, "_label": "NIR 50"}]}}))
    runs = expand(load_sweep(path))
    groups = _pretrain_groups(runs)  # 12 runs, but defense and attack do not shape the warm start
    assert len(runs) == 12 and sorted(g["data"]["partition"] for g in groups) == ["deg_niid", "iid"]
    path.write_text(yaml.safe_dump({"base": BASE, "grid": {"defense.name": ["fedavg", "median"]}}))
    assert _pretrain_groups(expand(load_sweep(path))) == []  # no warm start configured


def test_a_changed_profile_is_not_mixed_with_old_runs(tmp_path):
    grid = _grid(tmp_path)
    out = tmp_path / "sweep"
    spec = load_sweep(grid)
    spec.grid = {"defense.name": ["fedavg"]}
    run_sweep(spec, out, jobs=1, profile="short", log=lambda m: None)
    spec.profiles["short"] = {"rounds": 1}  # same profile name, other content: the old runs are not reused
    with pytest.raises(ConfigError, match="another base config or profile"):
        run_sweep(spec, out, jobs=1, profile="short", log=lambda m: None)


def test_ranking_check_counts_settings_and_pairs_by_hand():
    nan = float("nan")
    cells = {}
    # setting A: FLAME 5 < Median 30, FedCC ties FLAME at 5 (a tie is not lower) -> the setting fails, 1 of 2
    # pairs holds; paper: both hold
    for d, ours, paper in [("FLAME", 5, 6), ("Median", 30, 35), ("FedCC", 5, 42)]:
        cells[((d,), ("A",), "aasr")] = (ours, paper)
    # setting B: all hold for ours; paper missing for Median (NaN pair does not hold)
    for d, ours, paper in [("FLAME", 1, 6), ("Median", 20, nan), ("FedCC", 9, 30)]:
        cells[((d,), ("B",), "aasr")] = (ours, paper)
    t = {"cells": cells, "rows_keys": ["defense"], "cols_keys": ["data"],
         "compare": {"by": "defense", "metric": "aasr", "better": ["FLAME"], "than": ["Median", "FedCC"]}}
    rc = ranking_check(t)
    assert (rc["settings"], rc["ours"], rc["paper"]) == (2, 1, 1)
    assert (rc["pairs"], rc["pairs_ours"], rc["pairs_paper"]) == (4, 3, 3)
    assert rc["disagree"] == [("A",)]


def test_table_reads_nested_summary_metrics():
    from fedshield.report.table import summary_value

    s = {"aasr": 0.25, "post_training": {"ba_after": 0.03, "k": 0.001}}
    assert summary_value(s, "aasr") == 0.25
    assert summary_value(s, "post_training.ba_after") == 0.03
    assert summary_value(s, "post_training.ma_after") is None and summary_value(s, "nope") is None


def test_ranking_check_counts_cells_near_the_paper_by_hand():
    """``near``: 'better' cells with ours at most ``within`` points above the paper's (lower always counts)."""
    nan = float("nan")
    cells = {}
    for d, setting, ours, paper in [("FLAME", "A", 14.99, 10), ("FLAME", "B", 15.01, 10), ("FLAME", "C", 1, 30),
                                    ("FLAME", "D", 3, nan), ("Median", "A", 50, 10)]:
        cells[((d,), (setting,), "aasr")] = (ours, paper)
    t = {"cells": cells, "rows_keys": ["defense"], "cols_keys": ["data"],
         "compare": {"by": "defense", "metric": "aasr", "better": ["FLAME"], "than": ["Median"]}}
    rc = ranking_check(t)
    assert (rc["near"], rc["near_of"], rc["within"]) == (2, 3, 5.0)  # A and C; B is 5.01 above; D has no paper value
    t["compare"]["within"] = 10
    assert ranking_check(t)["near"] == 3
    for k in cells:
        cells[k] = (cells[k][0], nan)
    assert ranking_check(t)["near"] is None  # no paper values at all


def _fake_sweep(path: Path, runs: list[tuple[dict, dict]], table: dict, grid: dict) -> Path:
    """A finished sweep folder written by hand: (labels, summary) per run."""
    index = {"name": path.name, "grid": grid, "table": table, "runs": []}
    for i, (labels, summary) in enumerate(runs):
        rid = f"run{i}"
        index["runs"].append({"id": rid, "labels": labels})
        (path / "runs" / rid).mkdir(parents=True)
        (path / "runs" / rid / "summary.json").write_text(json.dumps(summary))
    (path / "sweep.json").write_text(json.dumps(index))
    return path


def test_seed_spread_by_hand(tmp_path):
    """The main sweep's cells (seed 0) beside another sweep's seeds 1 and 2: values, mean, range and the counts
    against the paper computed by hand; a cell run only once is left out; overlapping seeds are refused."""
    from fedshield.report.seeds import render_seed_spread, seed_spread

    table = {"rows": ["defense"], "columns": ["data"]}
    main = _fake_sweep(tmp_path / "main", [
        ({"defense": "FLAME", "data": "NIR 25"}, {"seed": 0, "aasr": 0.50}),
        ({"defense": "FLAME", "data": "NIR 50"}, {"seed": 0, "aasr": 0.10}),
        ({"defense": "Median", "data": "NIR 25"}, {"seed": 0, "aasr": 0.70}),  # no other seed: not listed
    ], table, {"defense": [], "data": []})
    other = _fake_sweep(tmp_path / "seeds", [
        ({"defense": "FLAME", "data": "NIR 25", "seed": "1"}, {"seed": 1, "aasr": 0.12}),
        ({"defense": "FLAME", "data": "NIR 25", "seed": "2"}, {"seed": 2, "aasr": 0.13}),
        ({"defense": "FLAME", "data": "NIR 50", "seed": "1"}, {"seed": 1, "aasr": 0.40}),
    ], {**table, "rows": ["defense", "seed"]}, {"seed": [], "defense": [], "data": []})
    ref = tmp_path / "ref.csv"
    ref.write_text("defense,data,metric,value\nFLAME,NIR 25,aasr,9.97\nFLAME,NIR 50,aasr,27.45\n")
    s = seed_spread(main, [other], "aasr", ref)
    assert [c["cell"] for c in s["cells"]] == [("FLAME", "NIR 25"), ("FLAME", "NIR 50")]
    a, b = s["cells"]
    assert a["values"] == pytest.approx({0: 50.0, 1: 12.0, 2: 13.0}) and a["mean"] == pytest.approx(25.0)
    assert (a["low"], a["high"], a["paper"]) == pytest.approx((12.0, 50.0, 9.97))
    assert b["mean"] == pytest.approx(25.0) and (b["low"], b["high"]) == pytest.approx((10.0, 40.0))
    # paper 9.97 is below [12, 50]; 27.45 is inside [10, 40]. Mean 25 <= 9.97 + 5? no; <= 27.45 + 5? yes
    assert (s["of"], s["inside"], s["near"]) == (2, 1, 1)
    md = render_seed_spread(s)
    assert md[2] == "| defense / data | seed 0 | seed 1 | seed 2 | mean | range | paper |"
    assert md[4] == "| FLAME / NIR 25 | 50.00 | 12.00 | 13.00 | 25.00 | 12.00–50.00 | 9.97 |"
    assert md[5] == "| FLAME / NIR 50 | 10.00 | 40.00 | – | 25.00 | 10.00–40.00 | 27.45 |"
    assert md[7] == ("Of the 2 cells with a paper value: the paper's AASR lies within our range over seeds in 1; "
                     "our mean is within 5 points of it or lower in 1.")
    assert render_seed_spread({**s, "of": 1})[7].startswith("Of the 1 cell with a paper value:")
    with pytest.raises(ValueError, match="second run at seed 0"):
        seed_spread(main, [main], "aasr", ref)


def test_report_lists_the_admitted_attackers_of_filtering_defenses(tmp_path):
    """Only a defense that rejected something and still admitted an attacker is listed, with each attacker's
    id (dataset size): rounds admitted / rounds attacked."""
    from fedshield.report import admitted_attackers_section, collect_results

    def rec(client, admitted, samples):
        return {"client": client, "rounds": 4, "admitted": admitted, "admitted_share": admitted / 4, "samples": samples}

    d = _fake_sweep(tmp_path / "sw", [
        ({"defense": "FedAvg"}, {"seed": 0, "tp": 0, "fp": 0, "attackers": [rec(0, 4, 50), rec(1, 4, 70)]}),
        ({"defense": "FLAME"}, {"seed": 0, "tp": 5, "fp": 1, "attackers": [rec(0, 3, 50), rec(1, 0, 70)]}),
        ({"defense": "Krum"}, {"seed": 0, "tp": 8, "fp": 3, "attackers": [rec(0, 0, 50), rec(1, 0, 70)]}),
    ], {"rows": ["defense"], "columns": []}, {"defense": []})
    lines = admitted_attackers_section(d, collect_results(d))
    assert lines[0] == "## Admitted attackers"
    assert [x for x in lines if x.startswith("| ") and "run" not in x] == ["| FLAME | 0 (50): 3/4, 1 (70): 0/4 |"]
    d2 = _fake_sweep(tmp_path / "none", [({"defense": "Krum"}, {"seed": 0, "tp": 8, "attackers": [rec(0, 0, 5)]})],
                     {"rows": ["defense"], "columns": []}, {"defense": []})
    assert admitted_attackers_section(d2, collect_results(d2)) == []  # no section at all


def test_ranking_check_leaves_out_unfinished_settings():
    nan = float("nan")
    cells = {((d,), (s,), "aasr"): v for d, s, v in [
        ("FLAME", "A", (5, 6)), ("Median", "A", (30, 35)),
        ("FLAME", "B", (nan, 6)), ("Median", "B", (20, 30)),  # B: FLAME has not finished
        ("Other", "A", (nan, nan))]}  # a defense outside the comparison: does not hold A back
    rc = ranking_check({"cells": cells, "rows_keys": ["defense"], "cols_keys": ["data"],
                        "compare": {"by": "defense", "metric": "aasr", "better": ["FLAME"], "than": ["Median"]}})
    assert (rc["settings"], rc["ours"], rc["pairs"], rc["pairs_ours"], rc["near_of"]) == (1, 1, 1, 1, 1)
