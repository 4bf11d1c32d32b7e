import json

import yaml

from fedshield.cli import main


def test_list_defenses_prints_name_summary_and_paper(capsys):
    assert main(["list", "defenses"]) == 0
    out = capsys.readouterr().out
    for name in ("fedavg", "flame", "fedward"):
        assert f"\n{name} " in "\n" + out
    assert "USENIX Security 2022" in out and "paper:" in out


def test_list_attacks(capsys):
    assert main(["list", "attacks"]) == 0
    assert "dba" in capsys.readouterr().out


def test_bad_config_exits_2_and_names_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"rounds": 1, "defense": {"name": "flame", "params": {"lam": -1}}, "trainn": {}}))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "trainn: unknown key" in capsys.readouterr().err
    cfg.write_text(yaml.safe_dump({"rounds": 1, "data": {"dataset": "synthetic"}, "defense": {"name": "flame", "params": {"lam": -1}}}))
    assert main(["run", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "lam=-1 is invalid" in capsys.readouterr().err


def test_run_with_overrides_and_resume(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": "small_cnn", "num_clients": 6, "clients_per_round": 3, "rounds": 5, "workers": 1,
        "data": {"dataset": "synthetic"}, "train": {"epochs": 1, "lr": 0.05},
    }))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--set", "rounds=2", "--set", "seed=5", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds_done"] == 2 and summary["seed"] == 5
    assert "final_ma=" in capsys.readouterr().out
    assert main(["run", str(cfg), "--set", "rounds=2", "--set", "seed=5", "--out", str(out), "--quiet"]) == 2
    assert "finished run" in capsys.readouterr().err
