import pytest
import yaml

from fedshield.config import ConfigError, apply_overrides, config_from_dict, dump_config, load_config, set_key


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


def test_defense_settings_are_checked_at_load():
    with pytest.raises(ConfigError, match=r"defense: unknown defense 'flmae'; available: \[.*'flame'"):
        config_from_dict({"defense": {"name": "flmae"}})
    with pytest.raises(ConfigError, match=r"lam=-5 is invalid"):
        config_from_dict({"defense": {"name": "flame", "params": {"lam": -5}}})
    with pytest.raises(ConfigError, match=r"defense 'krum': unknown parameter 'g'; allowed: \['f', 'squared'\]"):
        config_from_dict({"defense": {"name": "krum", "params": {"g": 1}}})
    with pytest.raises(ConfigError, match=r"defense 'fltrust' needs the server's own data: set data.server_holdout"):
        config_from_dict({"defense": {"name": "fltrust"}})
    with pytest.raises(ConfigError, match=r"root_size=0 is invalid"):
        config_from_dict({"data": {"server_holdout": 100}, "defense": {"name": "fltrust", "params": {"root_size": 0}}})
    cfg = config_from_dict({"data": {"server_holdout": 100}, "defense": {"name": "fltrust", "params": {"root_size": 50}}})
    assert cfg.defense.params == {"root_size": 50}


def test_post_training_and_names_are_checked_at_load():
    with pytest.raises(ConfigError, match=r"unknown post-training method 'flan'"):
        config_from_dict({"data": {"server_holdout": 800}, "post_training": "flan"})
    with pytest.raises(ConfigError, match=r"post_training 'flain': unknown parameter 'kk'"):
        config_from_dict({"data": {"server_holdout": 800}, "post_training": {"name": "flain", "params": {"kk": 1}}})
    with pytest.raises(ConfigError, match=r"needs an auxiliary set"):
        config_from_dict({"post_training": "flain"})
    with pytest.raises(ConfigError, match=r"model: unknown model 'lenet5'"):
        config_from_dict({"model": "lenet5"})
    with pytest.raises(ConfigError, match=r"data.dataset: unknown dataset 'fmnist2'"):
        config_from_dict({"data": {"dataset": "fmnist2"}})


def test_from_config_no_longer_hides_type_errors():
    """Only unknown/missing keywords (found by the spec) become ParameterError; a TypeError raised inside a
    constructor is a bug and must surface as itself."""
    from fedshield.defenses import Aggregate, Defense, DefenseContext, ParameterError

    class Buggy(Defense):
        name = "buggy"

        def __init__(self, k: int = 1):
            len(k)  # a bug: TypeError for an int

        def _aggregate(self, inp) -> Aggregate:
            raise AssertionError

    with pytest.raises(TypeError, match="has no len"):
        Buggy.from_config({}, DefenseContext())
    with pytest.raises(ParameterError, match="unknown parameter 'j'"):
        Buggy.from_config({"j": 2}, DefenseContext())


def test_trigger_pixels_replace_the_default_pattern():
    cfg = config_from_dict({"attack": {"name": "pixel", "trigger": {"pixels": [[0, 0], [1, 1]]}}})
    assert cfg.attack.trigger.pattern is None and cfg.attack.trigger.pixels == [(0, 0), (1, 1)]
    with pytest.raises(ConfigError, match="exactly one of trigger.pattern and trigger.pixels"):
        config_from_dict({"attack": {"trigger": {"pattern": "square", "pixels": [[0, 0]]}}})
    assert config_from_dict({"attack": {"name": "pixel"}}).attack.trigger.pattern == "dba"


def test_set_key_merges_sections_only_when_asked():
    data = {"defense": {"name": "flame", "params": {"lam": 0.1}}}
    set_key(data, "defense", {"name": "krum"}, merge_mappings=True)
    assert data == {"defense": {"name": "krum", "params": {"lam": 0.1}}}
    set_key(data, "defense.params", {"f": 1})
    assert data["defense"]["params"] == {"f": 1}
    set_key(data, "train.lr", 0.5)
    assert data["train"] == {"lr": 0.5}
    with pytest.raises(ConfigError, match="'lr' is not a section"):
        set_key(data, "train.lr.x", 1)


def test_every_defense_parameter_of_a_wrong_type_is_a_config_error():
    """Config-time validation runs each defense's own checks: a string, a list, NaN or -1 for any declared
    parameter gives a ConfigError (or is accepted), never a TypeError from inside a constructor."""
    from fedshield.defenses import available_defenses

    for name, cls in available_defenses().items():
        for key in cls.params_spec():
            for bad in ("x", [1], float("nan"), -1):
                try:
                    config_from_dict({"data": {"server_holdout": 100}, "defense": {"name": name, "params": {key: bad}}})
                except ConfigError as exc:
                    assert key in str(exc), (name, key, bad, str(exc))
