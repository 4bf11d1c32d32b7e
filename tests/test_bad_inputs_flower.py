"""Bad-input corpus, Flower replies: every malformed reply is dropped with a recorded reason (never aggregated,
never a crash), and the strategy never sends out a non-finite global model. Skipped when Flower is not
installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

flwr = pytest.importorskip("flwr", reason="Flower is not installed (pip install 'fedshield[flower]')")

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict  # noqa: E402
from flwr.app import Message  # noqa: E402

from fedshield.defenses import DefenseContext, build_defense  # noqa: E402
from fedshield.flower import FedShieldStrategy, arrayrecord_to_flat, flat_to_arrayrecord  # noqa: E402
from fedshield.flower.common import setup_for_run_config  # noqa: E402
from flowertest import FakeGrid, task_identity  # noqa: E402,F401  (task_identity: autouse fixture)

APP = Path(__file__).resolve().parents[1] / "examples" / "flower"
RC = {"fedshield-config": "configs/synthetic3_flame.yaml", "fedshield-set": "attack.name=none"}


@pytest.fixture(scope="module")
def setup():
    return setup_for_run_config(RC, APP)


def _strategy(setup, tmp_path, name="fedavg", params=None):
    cfg, s = setup
    defense = build_defense(name, params or {}, DefenseContext(layout=s.layout, model_fn=s.model_fn))
    return FedShieldStrategy(defense, s.layout, seed=cfg.seed, num_clients=cfg.num_clients,
                             log_path=tmp_path / "rounds.jsonl", min_available_nodes=1, min_train_nodes=1)


def _round(strategy, setup, contents):
    """Send round 1 to one node per content and aggregate their replies: (arrays, metrics, dropped reasons)."""
    _, s = setup
    nodes = list(range(1, len(contents) + 1))
    msgs = list(strategy.configure_train(1, flat_to_arrayrecord(s.initial_params, s.layout), ConfigRecord(),
                                         FakeGrid(nodes)))
    instr = {m.metadata.dst_node_id: m for m in msgs}
    replies = [Message(c, reply_to=instr[n]) for n, c in zip(nodes, contents)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    reasons = {d["node_id"]: d["reason"] for d in strategy.history[-1]["dropped"]}
    return arrays, metrics, reasons


def _good(setup, cid, scale=0.01, seed=0):
    _, s = setup
    flat = s.initial_params + scale * torch.randn(s.layout.dim, generator=torch.Generator().manual_seed(seed))
    return RecordDict({"arrays": flat_to_arrayrecord(flat, s.layout),
                       "metrics": MetricRecord({"num-examples": 50, "client-id": cid})})


def _arrays_with(setup, name_fn):
    """The good reply's ArrayRecord with the first array replaced by ``name_fn(original numpy array)``."""
    _, s = setup
    rec = flat_to_arrayrecord(s.initial_params, s.layout)
    first = s.layout.entries[0].name
    return ArrayRecord({k: (Array(name_fn(rec[k].numpy())) if k == first else rec[k]) for k in rec.keys()})


def _bad_arrays(setup, name_fn, cid=5):
    return RecordDict({"arrays": _arrays_with(setup, name_fn), "metrics": MetricRecord({"num-examples": 50, "client-id": cid})})


def _metrics_only(setup, metrics):
    _, s = setup
    return RecordDict({"arrays": flat_to_arrayrecord(s.initial_params, s.layout), "metrics": MetricRecord(metrics)})


BAD_REPLIES = {
    "wrong length": (lambda st: _bad_arrays(st, lambda a: a.reshape(-1)[:-1].copy()), "shape"),
    "extra length": (lambda st: _bad_arrays(st, lambda a: np.concatenate([a.reshape(-1), [0.0]]).astype(np.float32)), "shape"),
    "NaN": (lambda st: _bad_arrays(st, lambda a: np.full_like(a, np.nan)), "non-finite"),
    "Inf": (lambda st: _bad_arrays(st, lambda a: np.full_like(a, np.inf)), "non-finite"),
    "float64 beyond float32": (lambda st: _bad_arrays(st, lambda a: np.full(a.shape, 1e300)), "non-finite"),
    "bool dtype": (lambda st: _bad_arrays(st, lambda a: np.zeros(a.shape, bool)), "dtype"),
    "complex dtype": (lambda st: _bad_arrays(st, lambda a: np.zeros(a.shape, np.complex64)), "dtype"),
    "missing array": (lambda st: RecordDict({"arrays": ArrayRecord({k: v for k, v in list(
        flat_to_arrayrecord(st[1].initial_params, st[1].layout).items())[1:]}),
        "metrics": MetricRecord({"num-examples": 50, "client-id": 5})}), "missing"),
    "extra array": (lambda st: RecordDict({"arrays": ArrayRecord({**dict(flat_to_arrayrecord(
        st[1].initial_params, st[1].layout).items()), "evil": Array(np.zeros(3, np.float32))}),
        "metrics": MetricRecord({"num-examples": 50, "client-id": 5})}), "unexpected"),
    "no num-examples": (lambda st: _metrics_only(st, {"client-id": 5}), "num-examples"),
    "negative num-examples": (lambda st: _metrics_only(st, {"num-examples": -3, "client-id": 5}), "num-examples"),
    "zero num-examples": (lambda st: _metrics_only(st, {"num-examples": 0, "client-id": 5}), "num-examples"),
    "NaN num-examples": (lambda st: _metrics_only(st, {"num-examples": float("nan"), "client-id": 5}), "num-examples"),
    "Inf num-examples": (lambda st: _metrics_only(st, {"num-examples": float("inf"), "client-id": 5}), "num-examples"),
    "client id out of range": (lambda st: _metrics_only(st, {"num-examples": 5, "client-id": 10_000}), "client-id"),
    "client id negative": (lambda st: _metrics_only(st, {"num-examples": 5, "client-id": -1}), "client-id"),
    "no arrays": (lambda st: RecordDict({"metrics": MetricRecord({"num-examples": 5})}), "ArrayRecord"),
    "duplicate client id": (lambda st: _good(st, 0, seed=9), "already replied"),
}


@pytest.mark.parametrize("case", list(BAD_REPLIES))
def test_bad_reply_is_dropped_with_a_reason_and_not_aggregated(setup, tmp_path, case):
    """Two good replies (clients 0 and 1) and the bad one: the aggregate is exactly FedAvg of the good two."""
    make, fragment = BAD_REPLIES[case]
    strategy = _strategy(setup, tmp_path)
    arrays, metrics, reasons = _round(strategy, setup, [_good(setup, 0, seed=1), _good(setup, 1, seed=2), make(setup)])
    assert metrics["num-dropped"] == 1 and list(metrics["dropped-node-ids"]) == [3]
    assert fragment in reasons[3], reasons
    _, s = setup
    g = s.initial_params
    both = torch.stack([arrayrecord_to_flat(_good(setup, c, seed=c + 1)["arrays"], s.layout) for c in (0, 1)])
    assert torch.allclose(arrayrecord_to_flat(arrays, s.layout), g + (both - g).mean(dim=0), atol=1e-6)


def test_huge_finite_replies_never_send_a_non_finite_model(setup, tmp_path):
    """Every reply finite but near float32's limit, and a server learning rate that overflows: the strategy
    returns the previous global model and records the refusal."""
    _, s = setup
    strategy = _strategy(setup, tmp_path, "fedavg", {"server_lr": 1e300})
    arrays, metrics, reasons = _round(strategy, setup, [_good(setup, 0, seed=1), _good(setup, 1, seed=2)])
    assert not reasons
    out = arrayrecord_to_flat(arrays, s.layout)  # would raise on NaN/Inf
    assert torch.equal(out, s.initial_params)
    assert metrics["info.refused"] == 1.0 and metrics["num-accepted"] == 0
    assert "kept the previous global model" in strategy.history[-1]["info"]["refused_reason"]


def test_reply_with_values_at_float32_limit_aggregates_finitely(setup, tmp_path):
    _, s = setup
    strategy = _strategy(setup, tmp_path, "median")
    big = RecordDict({"arrays": flat_to_arrayrecord(torch.full((s.layout.dim,), 3.0e38), s.layout),
                      "metrics": MetricRecord({"num-examples": 50, "client-id": 2})})
    arrays, metrics, _ = _round(strategy, setup, [big, _good(setup, 0, seed=1), _good(setup, 1, seed=2)])
    assert bool(torch.isfinite(arrayrecord_to_flat(arrays, s.layout)).all())
