"""Bad-input corpus, config: NaN/Inf in every numeric place (typed keys and free-form ``params``), as YAML
floats or as strings, refused at load naming the dotted key; the same for attack and defense parameters
given through the API; YAML problems name the file and line."""

from __future__ import annotations

import inspect
import re
import math
from functools import partial

import pytest
import torch

from badinput import TINY, write_yaml
from fedshield.attacks import validate_attack_params
from fedshield.config import ConfigError, apply_overrides, config_from_dict, load_config, read_yaml
from fedshield.defenses import DefenseContext, ParameterError, available_defenses
from fedshield.models import ParamLayout, build_model


def _with(path: str, value):
    """TINY with the dotted ``path`` set to ``value`` (sections created as needed)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    node = data
    parts = path.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return data


NUMERIC_KEYS = [
    ("train.lr", None),
    ("train.momentum", None),
    ("train.weight_decay", None),
    ("train.gamma", None),
    ("attack.trigger.value", {"attack": {"name": "dba", "num_attackers": 1}}),
    ("attack.train.lr", {"attack": {"name": "dba", "num_attackers": 1, "train": {"lr": 0.1}}}),
    ("data.alpha", {"data": {"dataset": "synthetic", "partition": "dirichlet", "alpha": 0.5}}),
    ("data.fraction", {"data": {"dataset": "synthetic", "partition": "deg_niid", "fraction": 0.5}}),
    ("defense.params.server_lr", None),
    ("defense.params.lam", {"defense": {"name": "flame"}}),
    ("attack.params.factor", {"attack": {"name": "boosting", "num_attackers": 1}}),
    ("post_training.params.k0", {"post_training": {"name": "flain"}}),
]


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("key, extra", NUMERIC_KEYS, ids=[k for k, _ in NUMERIC_KEYS])
def test_non_finite_numbers_are_refused_naming_the_key(key, extra, bad):
    data = {**TINY, **(extra or {})}
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node[p] = dict(node.get(p) or {})
        node = node[p]
    node[parts[-1]] = bad
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(data)


@pytest.mark.parametrize("text", ["inf", "-Infinity", "nan", "NaN"])
def test_non_finite_strings_for_float_keys_are_refused(text):
    with pytest.raises(ConfigError, match=r"train\.lr"):
        config_from_dict(_with("train.lr", text))


def test_nan_inside_a_list_names_the_index():
    with pytest.raises(ConfigError, match=r"train\.milestones\[1\]"):
        config_from_dict(_with("train.milestones", [0.5, math.nan]))


def test_inf_where_an_integer_belongs():
    with pytest.raises(ConfigError, match="rounds"):
        config_from_dict(_with("rounds", math.inf))


def test_config_top_level_not_a_mapping():
    with pytest.raises(ConfigError, match="top level"):
        config_from_dict([1, 2])  # type: ignore[arg-type]


def test_device_names_are_checked_at_load():
    for good in ("cpu", "cuda", "cuda:0", "mps"):
        assert config_from_dict(_with("device", good)).device == good
    with pytest.raises(ConfigError, match="device 'tpu'"):
        config_from_dict(_with("device", "tpu"))


def test_attack_parameters_refuse_non_finite_values_through_the_api():
    with pytest.raises(ParameterError, match="factor"):
        validate_attack_params("boosting", {"factor": math.inf})
    with pytest.raises(ParameterError, match="eps"):
        validate_attack_params("pgd", {"eps": math.nan})


def _defense_float_params():
    """(defense name, parameter) for every float parameter of every registered defense."""
    out = []
    for name, cls in available_defenses().items():
        for pname, p in inspect.signature(cls.__init__).parameters.items():
            if isinstance(p.default, float):
                out.append((name, pname))
    return out


@pytest.fixture(scope="module")
def context():
    model_fn = partial(build_model, "small_cnn", 1, 10, 28)
    x = torch.rand(40, 1, 28, 28)
    return DefenseContext(layout=ParamLayout.from_module(model_fn()), model_fn=model_fn,
                          server_data=(x, torch.arange(40) % 10), extra={"input_shape": (1, 28, 28)})


def test_every_float_parameter_of_every_defense_refuses_nan_and_inf(context):
    cases = _defense_float_params()
    assert len(cases) >= 20  # the walk found the defenses' parameters
    for name, pname in cases:
        cls = available_defenses()[name]
        for bad in (math.inf, math.nan):
            with pytest.raises(ParameterError, match=pname):
                cls.from_config({pname: bad}, context)


def test_read_yaml_names_file_line_and_column(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("a: 1\nb: [2\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid YAML at line 3, column 1"):
        read_yaml(bad)


def test_load_config_with_an_empty_file_uses_the_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).rounds == 30  # empty is a valid config (all defaults), not an error


def test_overrides_on_a_non_mapping():
    with pytest.raises(ConfigError, match="top level"):
        apply_overrides([1], ["rounds=2"])  # type: ignore[arg-type]


def test_yaml_duplicate_key_the_value_that_wins_is_validated(tmp_path):
    """PyYAML keeps the last of two equal keys; the value that wins is still validated."""
    cfg = write_yaml(tmp_path / "c.yaml", TINY)
    cfg.write_text(cfg.read_text() + "rounds: .inf\n")
    with pytest.raises(ConfigError, match="rounds"):
        load_config(cfg)


def test_exponent_notation_without_a_dot_is_a_number(tmp_path):
    """``lam: 1e-3`` (YAML 1.1 would read the string "1e-3") used to be refused as "lam='1e-3' is invalid" in
    free-form params; typed keys were coerced by the schema. In files, ``--set`` values and grid files alike."""
    path = tmp_path / "c.yaml"
    path.write_text("model: small_cnn\ndata: {dataset: synthetic}\ndefense: {name: flame, params: {lam: 1e-3}}\n"
                    "attack: {name: fang_krum, num_attackers: 1, params: {lambda_min: 2E-6}}\ntrain: {lr: 5e-2}\n")
    cfg = load_config(path, ["defense.params.lam=2e-3", "attack.params.eps=1e-2"])
    assert cfg.defense.params["lam"] == 0.002 and isinstance(cfg.defense.params["lam"], float)
    assert cfg.attack.params == {"lambda_min": 2e-6, "eps": 0.01}
    assert cfg.train.lr == 0.05
    (tmp_path / "w.yaml").write_text("a: 1e5\nb: '1e5'\nc: 12\nd: 1e\n")
    assert read_yaml(tmp_path / "w.yaml") == {"a": 1e5, "b": "1e5", "c": 12, "d": "1e"}


def test_an_exponent_that_overflows_is_refused_as_non_finite():
    with pytest.raises(ConfigError, match=r"defense.params.lam: NaN/Inf is not allowed"):
        config_from_dict(apply_overrides({**TINY, "defense": {"name": "flame"}}, ["defense.params.lam=1e400"]))


@pytest.mark.parametrize("section, key, value", [
    (None, "rounds", True), ("train", "batch_size", True), ("train", "lr", False), ("eval", "every", True),
    ("attack", "num_attackers", True), ("train", "milestones", [True]),
])
def test_a_boolean_where_a_number_belongs_is_refused(section, key, value):
    """``rounds: on`` (YAML 1.1 reads on/yes/true as a boolean) used to run one round: pydantic read True as 1."""
    data = {**TINY, "attack": {"name": "pixel", "num_attackers": 1}}
    if section is None:
        data[key] = value
    else:
        data[section] = {**data.get(section, {}), key: value}
    dotted = key if section is None else f"{section}.{key}"
    with pytest.raises(ConfigError, match=re.escape(f"{dotted}: {value!r} is a boolean")):
        config_from_dict(data)


def test_yaml_on_for_a_number_via_set_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"rounds: True is a boolean"):
        load_config(write_yaml(tmp_path / "c.yaml", TINY), ["rounds=on"])
    assert load_config(write_yaml(tmp_path / "c.yaml", TINY), ["rounds=3"]).rounds == 3


def test_proportional_poison_count_above_the_batch_size_is_refused():
    """poison_per_batch is a share of the attackers' batch (attack.train, else train) under proportional."""
    base = {**TINY, "attack": {"name": "dba", "num_attackers": 1, "poison_per_batch": 40, "poison_count": "proportional",
                               "train": {"lr": 0.05, "batch_size": 32}}}
    with pytest.raises(ConfigError, match=r"poison_per_batch=40 .* attackers' batch size 32"):
        config_from_dict(base)
    assert config_from_dict({**base, "attack": {**base["attack"], "poison_count": "fixed"}}).attack.poison_per_batch == 40
    with pytest.raises(ConfigError, match="poison_count"):
        config_from_dict({**base, "attack": {**base["attack"], "poison_count": "share"}})
