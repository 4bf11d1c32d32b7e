"""scripts/rank_summaries.py: a report's ranking counts from summary CSVs, one sweep's cells replacing another's."""

import importlib.util
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rank_summaries.py"
BASE = {"model": "small_cnn", "num_clients": 6, "clients_per_round": 4, "rounds": 3,
        "data": {"dataset": "synthetic"}, "train": {"lr": 0.05, "epochs": 1, "batch_size": 32},
        "attack": {"name": "dba", "num_attackers": 1, "start_round": 1}}


def _load():
    spec = importlib.util.spec_from_file_location("rank_summaries", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({
        "base": BASE,
        "grid": {"data": [{"partition": "iid", "_label": "A"}, {"partition": "dirichlet", "alpha": 0.5, "_label": "B"}],
                 "defense": [{"name": "median", "_label": "M"}, {"name": "trimmed_mean", "_label": "T"},
                             {"name": "flame", "_label": "F"}, {"name": "fedward", "_label": "W"}]},
        "table": {"rows": ["defense"], "columns": ["data"],
                  "compare": {"by": "defense", "metric": "aasr", "better": ["F", "W"], "than": ["M", "T"]}},
        "reference": "paper.csv"}))
    (tmp_path / "paper.csv").write_text("# values in %\ndefense,data,metric,value\n" + "".join(
        f"{d},{s},aasr,{v}\n" for (d, s), v in {("M", "A"): 50, ("T", "A"): 60, ("F", "A"): 8, ("W", "A"): 52,
                                                ("M", "B"): 40, ("T", "B"): 70, ("F", "B"): 30, ("W", "B"): 25}.items()))
    main = tmp_path / "main.csv"
    main.write_text("id,data,defense,aasr\n" + "".join(
        f"x,{s},{d},{v}\n" for (d, s), v in {("M", "A"): .5, ("T", "A"): .6, ("F", "A"): .1, ("W", "A"): .55,
                                             ("M", "B"): .4, ("T", "B"): .7, ("F", "B"): .8, ("W", "B"): .2}.items()))
    other = tmp_path / "other.csv"
    other.write_text("id,data,defense,aasr\ny,B,F,0.05\n")
    return grid, main, other


def test_counts_match_hand_computed_values_and_a_later_file_replaces_cells(tmp_path, capsys):
    grid, main, other = _write(tmp_path)
    mod = _load()
    mod.main([str(grid), str(main)])
    out = capsys.readouterr().out.splitlines()
    # A: F<M, F<T, W<T hold, W<M not; B: W<M, W<T hold, F not. Paper: 3 + 4 pairs, setting B only.
    # within 5: A F 10 <= 13, A W 55 <= 57, B W 20 <= 30; B F 80 > 35
    assert out[0] == "all: pairs 5 of 8 (paper 7); settings 0 of 2 (paper 1); within 5 points or lower: 3 of 4"
    assert out[-1] == "not within: F / B: ours 80.00, paper 30.00"
    mod.main([str(grid), str(main), str(other)])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "all: pairs 7 of 8 (paper 7); settings 1 of 2 (paper 1); within 5 points or lower: 4 of 4"
    assert not any(line.startswith("not within") for line in out)


@pytest.mark.parametrize("text, match", [
    ("id,defense,aasr\nx,M,0.5\n", r"no column\(s\) \['data'\]"),  # a summary without the table's columns
    ("id,data,defense,aasr\ny,B,F (script),0.05\n",  # a run that is not a point of the grid
     r"not a point of .*\(defense, data\): F \(script\) / B"),
])
def test_a_summary_that_does_not_fit_the_grid_is_refused(tmp_path, text, match):
    grid, main, _ = _write(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(SystemExit, match=match):
        _load().main([str(grid), str(main), str(bad)])


def test_table_shows_the_combined_cells_in_grid_order(tmp_path, capsys):
    grid, main, other = _write(tmp_path)
    partial = tmp_path / "partial.csv"  # W / B missing: its cell is shown as not run and left out of the counts
    partial.write_text("".join(line + "\n" for line in main.read_text().splitlines() if not line.endswith("W,0.2")))
    _load().main([str(grid), str(partial), str(other), "--table"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| defense | A AASR | B AASR |"
    assert out[2:6] == ["| M | 50.00 (50.00, +0.0) | 40.00 (40.00, +0.0) |",
                        "| T | 60.00 (60.00, +0.0) | 70.00 (70.00, +0.0) |",
                        "| F | 10.00 (8.00, +2.0) | 5.00 (30.00, -25.0) |",
                        "| W | 55.00 (52.00, +3.0) | – (25.00) |"]
    assert "7 of 8 runs finished." in out[7]
    # B has a cell not run, so it is left out of every count, as in a report; A as before (F<M, F<T, W<T)
    assert out[9] == "all: pairs 3 of 4 (paper 3); settings 0 of 1 (paper 0); within 5 points or lower: 2 of 2"
    assert not any(line.startswith("not within") for line in out)
