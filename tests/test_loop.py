"""The round loop end to end on the synthetic dataset: outputs, determinism, resume, attacker selection."""

import json

import pytest
import torch

from fedshield.config import ConfigError, config_from_dict
from fedshield.sim import run_experiment, select_clients
from fedshield.sim import loop as loop_module
from fedshield.sim.output import read_metrics_csv


def _cfg(**over):
    base = {
        "name": "synthetic_test",
        "seed": 3,
        "model": "small_cnn",
        "num_clients": 10,
        "clients_per_round": 5,
        "rounds": 4,
        "workers": 1,
        "data": {"dataset": "synthetic", "partition": "iid"},
        "train": {"lr": 0.05, "epochs": 1, "batch_size": 32},
        "attack": {"name": "dba", "num_attackers": 2, "start_round": 2, "poison_per_batch": 10,
                   "train": {"lr": 0.05, "epochs": 2, "batch_size": 32}},
        "eval": {"every": 2},
    }
    for k, v in over.items():
        base[k] = v
    return config_from_dict(base)


def _final(out):
    return torch.load(out / "final_model.pt")["global_params"]


def test_run_writes_every_output(tmp_path):
    summary = run_experiment(_cfg(), tmp_path / "run", progress=False)
    out = tmp_path / "run"
    for f in ("config.yaml", "metrics.csv", "summary.json", "metrics.png", "final_model.pt", "checkpoint.pt"):
        assert (out / f).exists(), f
    rows = read_metrics_csv(out / "metrics.csv")
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    assert [r["malicious"] for r in rows] == [0, 2, 2, 2]  # fixed attackers join from round 2
    assert all(r["tp"] + r["fp"] + r["tn"] + r["fn"] == 5 for r in rows)
    assert all(r["fn"] == r["malicious"] for r in rows)  # FedAvg accepts everyone
    import math

    assert math.isnan(rows[0]["ma"]) and not math.isnan(rows[1]["ma"])  # evaluated every 2 rounds
    saved = json.loads((out / "summary.json").read_text())
    assert saved["seed"] == 3 and saved["final_ma"] == summary["final_ma"] == rows[-1]["ma"]
    assert saved["aasr"] == pytest.approx((rows[1]["ba"] + rows[3]["ba"]) / 2)
    assert saved["malicious_accepted_share"] == 1.0
    assert "seed: 3" in (out / "config.yaml").read_text()


def test_same_seed_same_result_and_workers_do_not_matter(tmp_path):
    run_experiment(_cfg(), tmp_path / "a", progress=False)
    run_experiment(_cfg(), tmp_path / "b", progress=False)
    assert torch.equal(_final(tmp_path / "a"), _final(tmp_path / "b"))
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # the per-worker setting, so the sequential run is bit-comparable
    try:
        run_experiment(_cfg(workers=1), tmp_path / "seq", progress=False)
    finally:
        torch.set_num_threads(saved)
    run_experiment(_cfg(workers=2), tmp_path / "par", progress=False)
    assert torch.equal(_final(tmp_path / "seq"), _final(tmp_path / "par"))
    run_experiment(_cfg(seed=4), tmp_path / "c", progress=False)
    assert not torch.equal(_final(tmp_path / "a"), _final(tmp_path / "c"))


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    run_experiment(_cfg(), tmp_path / "whole", progress=False)
    real = loop_module.run_round

    def crash_in_round_3(setup, state):
        if state.round + 1 == 3:
            raise KeyboardInterrupt
        return real(setup, state)

    monkeypatch.setattr(loop_module, "run_round", crash_in_round_3)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_cfg(), tmp_path / "cut", progress=False)
    assert [r["round"] for r in read_metrics_csv(tmp_path / "cut" / "metrics.csv")] == [1, 2]
    with pytest.raises(ConfigError, match="--resume"):
        run_experiment(_cfg(), tmp_path / "cut", progress=False)
    monkeypatch.setattr(loop_module, "run_round", real)
    with pytest.raises(ConfigError, match="different config"):
        run_experiment(_cfg(seed=9), tmp_path / "cut", resume=True, progress=False)
    run_experiment(_cfg(), tmp_path / "cut", resume=True, progress=False)
    assert torch.equal(_final(tmp_path / "whole"), _final(tmp_path / "cut"))
    whole = read_metrics_csv(tmp_path / "whole" / "metrics.csv")
    cut = read_metrics_csv(tmp_path / "cut" / "metrics.csv")
    key = lambda rows: [(r["round"], r["ma"], r["ba"], r["accepted"]) for r in rows if r["round"] % 2 == 0]  # noqa: E731
    assert key(whole) == key(cut)


def test_client_selection():
    cfg = _cfg(num_clients=20, clients_per_round=6)
    for t in (1, 2, 7):
        sel = select_clients(cfg, [0, 1], t)
        assert len(sel) == 6 == len(set(sel))
        assert sel == select_clients(cfg, [0, 1], t)  # deterministic
        if t >= 2:
            assert {0, 1} <= set(sel)
    assert select_clients(cfg, [0, 1], 2) != select_clients(cfg, [0, 1], 3)


def test_finished_run_is_not_overwritten(tmp_path):
    run_experiment(_cfg(rounds=1, attack={"name": "none"}), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="finished run"):
        run_experiment(_cfg(rounds=1, attack={"name": "none"}), tmp_path / "r", progress=False)


def test_metrics_name_the_rejected_clients(tmp_path):
    """Each row lists the ids the defense left out: as many as it flagged (TP + FP), all among the round's
    selection; FedAvg leaves out nobody."""
    import csv

    from fedshield.sim import build_setup

    attackers = build_setup(_cfg()).attackers
    for defense, expect_some in (({"name": "krum", "params": {"f": 1}}, True), ({"name": "fedavg"}, False)):
        out = tmp_path / defense["name"]
        run_experiment(_cfg(defense=defense), out, progress=False)
        with open(out / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        ids = [[int(c) for c in r["rejected_clients"].split()] for r in rows]
        for r, rej in zip(rows, ids):
            assert len(rej) == int(r["tp"]) + int(r["fp"]) == int(r["selected"]) - int(r["accepted"])
            assert len(set(rej)) == len(rej) and set(rej) <= set(select_clients(_cfg(), attackers, int(r["round"])))
        assert any(ids) is expect_some


def _write_rows(path, table):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, [k for k in table[0] if k != "malicious_clients"], extrasaction="ignore")
        w.writeheader()
        w.writerows(table)


def _as_older_run(out):
    """Rewrite a run folder as fedshield wrote it before ``malicious_clients`` and ``attackers``; its rows."""
    import csv

    with open(out / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    _write_rows(out / "metrics.csv", table)
    s = json.loads((out / "summary.json").read_text())
    del s["attackers"]
    (out / "summary.json").write_text(json.dumps(s))
    return table


def test_summary_says_which_attacker_was_admitted(tmp_path):
    """``malicious_clients`` names each round's attackers; ``summary.json``'s ``attackers`` counts, per attacker,
    the rounds its update was admitted (summing to FN) with its dataset size; a run without the column (written
    before it existed) gets the same records back from the seeded selection."""
    import csv

    from fedshield.report.attackers import format_admission, run_admission
    from fedshield.sim import build_setup

    # FedCC on a Dirichlet split: the two attackers differ in size, and one is admitted in some rounds only
    cfg = _cfg(defense={"name": "fedcc"}, rounds=5, data={"dataset": "synthetic", "partition": "dirichlet", "alpha": 0.5})
    out = tmp_path / "fedcc"
    summary = run_experiment(cfg, out, progress=False)
    rows = read_metrics_csv(out / "metrics.csv")
    setup = build_setup(cfg)
    assert [str(r["malicious_clients"]).split() if r["malicious"] else [] for r in rows] == \
        [[] if t < 2 else [str(c) for c in setup.attackers] for t in range(1, 6)]
    recs = summary["attackers"]
    assert [a["client"] for a in recs] == setup.attackers
    assert all(a["rounds"] == 4 and a["samples"] == len(setup.client_indices[a["client"]]) for a in recs)
    assert sum(a["admitted"] for a in recs) == summary["fn"]
    assert len({a["samples"] for a in recs}) == 2 and 0 < max(a["admitted"] for a in recs) < 4  # a mixed case
    for a in recs:  # admitted = attacked rounds in which its id is not among the rejected
        kept = sum(1 for r in rows if r["malicious"] and str(a["client"]) not in str(r["rejected_clients"]).split())
        assert a["admitted"] == kept
    assert json.loads((out / "summary.json").read_text())["attackers"] == recs
    assert run_admission(out) == recs

    # an older run folder: no malicious_clients column, no attackers in the summary
    table = _as_older_run(out)
    assert run_admission(out) == recs
    assert format_admission(recs) == ", ".join(f"{a['client']} ({a['samples']}): {a['admitted']}/4" for a in recs)
    assert run_admission(out, sizes=False) == [{k: v for k, v in a.items() if k != "samples"} for a in recs]
    # a recorded attacker count the rebuilt selection does not give: nothing rather than a wrong answer
    table[2]["malicious"] = "1"
    _write_rows(out / "metrics.csv", table)
    assert run_admission(out) == []

    # sampled selection: an attacker attacks only in the rounds it is drawn, and the rebuild must draw the same
    cfg = _cfg(defense={"name": "fedavg"}, rounds=6, attack={**cfg.attack.model_dump(), "selection": "sampled"})
    out = tmp_path / "sampled"
    recs = run_experiment(cfg, out, progress=False)["attackers"]
    assert recs and all(a["admitted"] == a["rounds"] < 5 for a in recs)  # drawn in some of the 5 attacked rounds
    table = _as_older_run(out)
    assert run_admission(out) == recs


def test_proportional_poison_count_changes_only_short_batches(tmp_path):
    """200 samples per client: with batch 32 the last batch has 8 (fixed poisons 8 of them, proportional
    ⌊10·8/32⌋ = 2), so the runs differ; with batch 40 every batch is full and the two readings are the same run."""
    finals = {}
    for bs in (32, 40):
        for count in ("fixed", "proportional"):
            attack = {"name": "dba", "num_attackers": 2, "start_round": 1, "poison_per_batch": 10, "poison_count": count,
                      "train": {"lr": 0.05, "epochs": 1, "batch_size": bs}}
            out = tmp_path / f"{bs}-{count}"
            run_experiment(_cfg(rounds=1, attack=attack, eval={"every": 1}), out, progress=False)
            finals[bs, count] = _final(out)
    assert not torch.equal(finals[32, "fixed"], finals[32, "proportional"])
    assert torch.equal(finals[40, "fixed"], finals[40, "proportional"])
