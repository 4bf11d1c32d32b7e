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


def test_list_shows_every_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for section, name in (("post_training", "flain"), ("datasets", "fashion_mnist"), ("partitions", "dirichlet"),
                          ("models", "resnet_light"), ("defenses", "fltrust"), ("attacks", "neurotoxin")):
        assert f"== {section}" in out and f"\n{name} " in out
    assert main(["list", "post_training"]) == 0
    assert capsys.readouterr().out.startswith("flain ")


def test_run_refuses_a_bad_defense_before_loading_data(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"dataset": "fashion_mnist", "root": str(tmp_path / "nothing")}}))
    out = tmp_path / "o"
    assert main(["run", str(cfg), "--set", "defense.name=flmae", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown defense 'flmae'" in err and not out.exists()
    assert main(["run", str(cfg), "--set", "defense={name: krum, params: {g: 1}}", "--out", str(out)]) == 2
    assert "unknown parameter 'g'" in capsys.readouterr().err and not out.exists()
