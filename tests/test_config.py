import pytest
import yaml

from fedshield.config import ConfigError, apply_overrides, config_from_dict, dump_config, load_config


def test_defaults_and_roundtrip(tmp_path):
    cfg = config_from_dict({"rounds": 3, "attack": {"name": "dba"}})
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again == cfg and again.attack.ids() == [0, 1, 2, 3]


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"train\.learning_rate: unknown key"):
        config_from_dict({"train": {"learning_rate": 0.1}})


def test_bad_value_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"data\.partition: unknown partition 'noniid'; available: \['deg_niid', 'dirichlet', 'fang_q', 'iid'\]"):
        config_from_dict({"data": {"partition": "noniid"}})
    with pytest.raises(ConfigError, match=r"train\.lr"):
        config_from_dict({"train": {"lr": 0}})


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="needs data.alpha"):
        config_from_dict({"data": {"partition": "dirichlet"}})
    with pytest.raises(ConfigError, match="exceeds num_clients"):
        config_from_dict({"num_clients": 5, "clients_per_round": 6})
    with pytest.raises(ConfigError, match="cannot all join"):
        config_from_dict({"clients_per_round": 3, "attack": {"name": "dba", "num_attackers": 4}})
    with pytest.raises(ConfigError, match="outside 0..9"):
        config_from_dict({"num_clients": 10, "attack": {"name": "dba", "num_attackers": 1, "attacker_ids": [12]}})
    with pytest.raises(ConfigError, match="exactly one of trigger.pattern and trigger.pixels"):
        config_from_dict({"attack": {"trigger": {"pattern": "dba", "pixels": [[0, 0]]}}})


def test_set_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"rounds": 5}))
    cfg = load_config(path, ["rounds=7", "train.lr=0.05", "attack.trigger.pixels=[[1, 2]]", "attack.trigger.pattern=null"])
    assert cfg.rounds == 7 and cfg.train.lr == 0.05 and cfg.attack.trigger.pixels == [(1, 2)]
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["rounds"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"rounds": 3}, ["rounds.x=1"])


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/c.yaml")


def test_shipped_configs_are_valid():
    """Every run config in configs/ (and the demo's) loads; every grid file expands to valid runs."""
    from pathlib import Path

    import fedshield
    from fedshield.sweep import expand, load_sweep

    paths = sorted(Path(__file__).parents[1].joinpath("configs").rglob("*.yaml"))
    paths.append(Path(fedshield.__file__).with_name("demo.yaml"))
    assert len(paths) >= 10
    for p in paths:
        if "grid" in (yaml.safe_load(p.read_text()) or {}):
            assert expand(load_sweep(p))
        else:
            load_config(p)
