"""Bad-input corpus, valid-looking experiments that cannot give a meaningful result: each is refused with a
one-line error naming the key, before any client trains (no metrics.csv is written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from badinput import TINY, assert_clear_error, cli, tiny_config
from fedshield.config import ConfigError, config_from_dict

TRAFFIC = {**TINY, "model": "mlp", "data": {"dataset": "synthetic_traffic", "partition": "by_device",
                                            "traffic": {"synthetic": {"num_devices": 6, "flows_per_device": 100}}}}


def _refused_before_training(capsys, tmp_path: Path, sets: list[str], *fragments: str, base=None) -> str:
    cfg = tiny_config(tmp_path, **(base or {}))
    out = tmp_path / "out"
    argv = ["run", str(cfg), "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    err = assert_clear_error(capsys, argv, *fragments)
    assert not (out / "metrics.csv").exists()
    return err


@pytest.mark.parametrize("sets, fragments", [
    (["defense.name=krum"], ("defense 'krum'", "at least 5 clients per round", "clients_per_round=3")),
    (["defense.name=bulyan", "num_clients=8", "clients_per_round=6"], ("defense 'bulyan'", "at least 7", "clients_per_round=6")),
    (["defense.name=rlr", "defense.params={threshold: 5}"], ("defense 'rlr'", "at least 5", "clients_per_round=3")),
    (["defense.name=multi_krum", "defense.params={f: 0, m: 4}"], ("defense 'multi_krum'", "at least 4")),
    (["defense.name=fedward", "clients_per_round=1"], ("defense 'fedward'", "at least 2", "clients_per_round=1")),
    (["defense.name=trimmed_mean", "defense.params={trim: 2}"], ("defense 'trimmed_mean'", "at least 5")),
])
def test_a_round_smaller_than_the_defense_needs_is_refused_before_training(capsys, tmp_path, sets, fragments):
    """Used to train round 1 in full, then fail inside the defense ("this round has n=3")."""
    _refused_before_training(capsys, tmp_path, sets, *fragments)


def test_fang_krum_with_too_many_fixed_attackers_is_refused_before_training(capsys, tmp_path):
    _refused_before_training(capsys, tmp_path, ["num_clients=8", "clients_per_round=6", "attack.name=fang_krum",
                                                "attack.num_attackers=2", "defense.name=median"],
                             "attack 'fang_krum'", "attack.num_attackers=2", "at least 7", "clients_per_round=6")


def test_fang_krum_with_too_many_sampled_attackers_names_the_round(capsys, tmp_path):
    """Sampled attackers: the count varies by round, so the round that breaks Krum's assumption is named. A
    round of attackers only used to crash in torch.stack (no benign update to craft from)."""
    cfg = tiny_config(tmp_path, num_clients=8, clients_per_round=7)
    base = ["run", str(cfg), "--set", "attack.name=fang_krum", "--set", "attack.selection=sampled"]
    assert_clear_error(capsys, [*base, "--out", str(tmp_path / "o1"), "--set", "attack.num_attackers=4"],
                       "attack 'fang_krum': round 1 has 3 attackers among 7 clients", "at least 9", "clients_per_round")
    assert_clear_error(capsys, [*base, "--out", str(tmp_path / "o2"), "--set", "attack.num_attackers=8"],
                       "attack 'fang_krum' crafts its updates from the round's benign updates",
                       "every client selected in round 1 is an attacker")


@pytest.mark.parametrize("attack", ["pixel", "dba", "blended", "semantic", "edge_case", "multi_backdoor",
                                    "boosting", "noise", "model_replacement", "neurotoxin"])
def test_image_attacks_on_network_traffic_are_refused(attack):
    """A pixel trigger on a (batch, features) matrix stamped whichever rows and columns its coordinates hit, and
    the run finished with a meaningless BA. Model-poisoning attacks default to the pixel data step."""
    with pytest.raises(ConfigError, match=f"attack '{attack}': data poisoning '.*' works on images.*attack.params.data"):
        config_from_dict({**TRAFFIC, "attack": {"name": attack, "num_attackers": 2}})


def test_traffic_data_steps_on_images_are_refused_at_config_time():
    with pytest.raises(ConfigError, match="attack 'boosting': data poisoning 'feature_trigger' needs a network-traffic"):
        config_from_dict({**TINY, "attack": {"name": "boosting", "num_attackers": 2,
                                             "params": {"data": "feature_trigger", "data_params": {"features": [0]}}}})


def test_label_flip_and_traffic_steps_still_run_on_traffic(capsys, tmp_path):
    for i, params in enumerate([{"name": "label_flip"}, {"name": "boosting", "params": {"data": "label_flip"}}]):
        cfg = tiny_config(tmp_path, f"t{i}.yaml", **{**TRAFFIC, "attack": {**params, "num_attackers": 2}})
        rc, _out, err = cli(capsys, ["run", str(cfg), "--out", str(tmp_path / f"o{i}")])
        assert rc == 0, err
        assert (tmp_path / f"o{i}" / "summary.json").exists()


def test_an_attack_starting_after_the_last_round_is_refused():
    """start_round > rounds used to run a clean federation and report it as an attacked one."""
    with pytest.raises(ConfigError, match=r"attack.start_round=5 is after the last round \(rounds=2\)"):
        config_from_dict({**TINY, "rounds": 2, "attack": {"name": "pixel", "num_attackers": 1, "start_round": 5}})
    config_from_dict({**TINY, "rounds": 2, "attack": {"name": "pixel", "num_attackers": 0, "start_round": 5}})


def test_flain_with_too_small_a_held_out_slice_is_refused_before_training(capsys, tmp_path):
    """Used to train every round, then fail in the post-training step."""
    err = _refused_before_training(capsys, tmp_path, ["post_training=flain", "data.server_holdout=20"],
                                   "post_training.aux_per_class=80", "data.server_holdout to at least 800")
    assert "round 1" not in err


@pytest.mark.parametrize("sets, fragments", [
    (["data.train_subset=30", "num_clients=50", "clients_per_round=5"],
     ("data.partition='iid' left 20 of 50 clients without samples", "from 30 training samples", "fewer num_clients")),
    (["data.train_subset=200", "num_clients=30", "clients_per_round=5", "data.partition=dirichlet",
      "data.alpha=0.001"], ("data.partition='dirichlet'", "a larger data.alpha")),
])
def test_a_partition_with_empty_clients_names_the_partition_and_the_fix(capsys, tmp_path, sets, fragments):
    """The message used to suggest "a larger alpha" for every partition, IID included."""
    err = _refused_before_training(capsys, tmp_path, sets, *fragments)
    if "iid" in fragments[0]:
        assert "alpha" not in err


def test_a_test_subset_without_backdoor_samples_names_the_key(capsys, tmp_path):
    """eval.test_subset=1 (a target-class image) used to end in "the backdoor test set must be non-empty"."""
    _refused_before_training(capsys, tmp_path, ["attack.name=pixel", "attack.num_attackers=1", "eval.test_subset=1"],
                             "eval.test_subset=1 leaves no test sample for the backdoor test set",
                             "attack.target_label=2")


def test_round_size_checks_run_at_config_time_so_a_sweep_refuses_the_grid_point_before_any_run():
    with pytest.raises(ConfigError, match=r"defense 'bulyan' with defense.params=\{'f': 0\} needs at least 3 clients"):
        config_from_dict({**TINY, "clients_per_round": 2, "defense": {"name": "bulyan", "params": {"f": 0}}})
    with pytest.raises(ConfigError, match="attack 'fang_krum' with attack.num_attackers=1 fixed attackers needs at least 5"):
        config_from_dict({**TINY, "attack": {"name": "fang_krum", "num_attackers": 1}})
    # sampled attackers: checked per round; a defense that needs the experiment (FLTrust) is checked at set-up
    config_from_dict({**TINY, "attack": {"name": "fang_krum", "num_attackers": 1, "selection": "sampled"}})
    config_from_dict({**TINY, "data": {"dataset": "synthetic", "server_holdout": 20}, "defense": {"name": "fltrust"}})


def test_auror_layer_that_is_not_a_tensor_of_the_model_is_refused_before_training(capsys, tmp_path):
    """Used to be a raw KeyError traceback from the parameter layout after round 1 had trained."""
    _refused_before_training(capsys, tmp_path, ["defense.name=auror", "defense.params={layer: fc9.weight}"],
                             "defense 'auror'", "layer='fc9.weight' is invalid", "conv1.weight")


def test_fang_krum_ignores_a_non_finite_benign_update_instead_of_looping_forever():
    """A diverging benign client (NaN in its update) made λ_max NaN and the halving loop never ended; the server
    drops that update, so the attack is crafted as if it were absent."""
    import torch
    from fedshield.attacks.fang import craft_fang_krum

    benign = torch.randn(6, 10, generator=torch.Generator().manual_seed(0))
    clean, lam, chosen = craft_fang_krum(torch.cat([benign[:2], benign[3:]]), [5, 6], torch.Generator().manual_seed(1))
    benign[2, 3] = float("nan")
    got, lam2, chosen2 = craft_fang_krum(benign, [6, 7], torch.Generator().manual_seed(1))
    assert (lam2, chosen2) == (lam, chosen) and all(torch.equal(a, b) for a, b in zip(got, clean))
    with pytest.raises(ValueError, match="every benign update of this round is non-finite"):
        craft_fang_krum(torch.full((3, 4), float("inf")), [3], torch.Generator().manual_seed(1))


@pytest.mark.parametrize("pixels, fragment", [
    ("[]", "trigger.pixels is empty"), ("[[-1, 0]]", "trigger.pixels [(-1, 0)] are negative"),
])
def test_impossible_trigger_pixels_are_refused_at_config_time(pixels, fragment):
    """Used to be "a trigger needs at least one pixel" (naming no key) or a run-time error."""
    with pytest.raises(ConfigError, match=r"attack.trigger: " + fragment.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)").replace("]", r"\]")):
        config_from_dict({**TINY, "attack": {"name": "pixel", "num_attackers": 1, "trigger": {"pixels": eval(pixels)}}})


def test_a_trigger_pixel_outside_the_image_names_the_key_before_training(capsys, tmp_path):
    _refused_before_training(capsys, tmp_path, ["attack.name=pixel", "attack.num_attackers=1",
                                                "attack.trigger.pixels=[[27, 27], [28, 3]]"],
                             "attack.trigger.pixels: trigger pixel (28, 3) lies outside a 28×28 image")


def test_flain_on_the_autoencoder_is_refused_at_config_time():
    """Used to train every round, then crash with a raw RuntimeError ("threshold is not calibrated") in FLAIN."""
    with pytest.raises(ConfigError, match="post_training 'flain' repairs a classifier.*model 'autoencoder'"):
        config_from_dict({**TRAFFIC, "model": "autoencoder", "data": {**TRAFFIC["data"], "server_holdout": 200},
                          "post_training": {"name": "flain", "aux_per_class": 10}})


def test_deepsight_on_the_autoencoder_is_refused_at_config_time():
    """Used to be refused with a misleading "input_shape=(22,) is invalid for this model" message."""
    with pytest.raises(ConfigError, match="defense 'deepsight' reads the model's class outputs; model 'autoencoder'"):
        config_from_dict({**TRAFFIC, "model": "autoencoder", "data": {**TRAFFIC["data"], "server_holdout": 100},
                          "defense": {"name": "deepsight"}})


@pytest.mark.parametrize("key, split", [("data.train_subset", "training"), ("eval.test_subset", "test")])
def test_a_subset_larger_than_the_split_warns_and_uses_all_of_it(monkeypatch, key, split):
    from fedshield.sim import build_setup

    monkeypatch.delenv("FEDSHIELD_QUICK", raising=False)
    section, name = key.split(".")
    cfg = config_from_dict({**TINY, section: {**TINY.get(section, {}), name: 10**7}})
    with pytest.warns(UserWarning, match=rf"{key}=10000000 is larger than 'synthetic'.s {split} split \(\d+ samples\)"):
        setup = build_setup(cfg)
    full = config_from_dict(TINY)
    assert len(setup.evaluator.test_y) == len(build_setup(full).evaluator.test_y)
