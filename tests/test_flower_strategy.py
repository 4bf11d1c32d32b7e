"""fedshield.flower without processes: records, the strategy's aggregation and reply filtering, the ClientApp's
training (same as the simulator's), run-config resolution. Skipped when Flower is not installed."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

flwr = pytest.importorskip("flwr", reason="Flower is not installed (pip install 'fedshield[flower]')")

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict  # noqa: E402

from fedshield.config import ConfigError  # noqa: E402
from fedshield.defenses import DefenseContext, RoundInput, build_defense  # noqa: E402
from fedshield.flower import FedShieldStrategy, MalformedReply, arrayrecord_to_flat, flat_to_arrayrecord  # noqa: E402
from fedshield.flower.client_app import make_client_app  # noqa: E402
from fedshield.flower.common import setup_for_run_config  # noqa: E402
from fedshield.flower.runconfig import (  # noqa: E402
    client_id_from_node_config,
    experiment_from_run_config,
)
from fedshield.sim.loop import train_clients  # noqa: E402
from fedshield.core.seeding import torch_stream  # noqa: E402
from flowertest import FakeGrid, task_identity  # noqa: E402,F401  (task_identity: autouse fixture)

APP = Path(__file__).resolve().parents[1] / "examples" / "flower"
RC = {"fedshield-config": "configs/synthetic3_flame.yaml", "fedshield-set": "attack.name=none"}


@pytest.fixture(scope="module")
def setup():
    return setup_for_run_config(RC, APP)


def _reply(instr: Message, content: RecordDict | None = None, error: Error | None = None) -> Message:
    return Message(error, reply_to=instr) if error is not None else Message(content, reply_to=instr)


def _instructions(strategy, setup, nodes, round_=1):
    grid = FakeGrid(nodes)
    msgs = list(strategy.configure_train(round_, flat_to_arrayrecord(setup[1].initial_params, setup[1].layout), ConfigRecord(), grid))
    # the SuperLink would stamp src ids; replies take their src from the instruction's dst
    return {m.metadata.dst_node_id: m for m in msgs}


def _content(flat, layout, n=100, cid=None):
    m = {"num-examples": n}
    if cid is not None:
        m["client-id"] = cid
    return RecordDict({"arrays": flat_to_arrayrecord(flat, layout), "metrics": MetricRecord(m)})


def _strategy(setup, tmp_path, name="fedavg", **kw):
    cfg, s = setup
    defense = build_defense(name, {}, DefenseContext(layout=s.layout, model_fn=s.model_fn))
    return FedShieldStrategy(defense, s.layout, seed=cfg.seed, num_clients=cfg.num_clients,
                             log_path=tmp_path / "rounds.jsonl", min_available_nodes=1, min_train_nodes=1, **kw)


def test_arrayrecord_roundtrip_and_validation(setup):
    _, s = setup
    flat = torch.randn(s.layout.dim)
    rec = flat_to_arrayrecord(flat, s.layout)
    assert list(rec.keys()) == s.layout.names
    assert torch.equal(arrayrecord_to_flat(rec, s.layout), flat)
    bad = flat.clone()
    bad[3] = float("nan")
    with pytest.raises(MalformedReply, match="non-finite"):
        arrayrecord_to_flat(flat_to_arrayrecord(bad, s.layout), s.layout)
    first = s.layout.entries[0]
    wrong = ArrayRecord({**{k: rec[k] for k in rec.keys()}, first.name: Array(np.zeros((2, 2), np.float32))})
    with pytest.raises(MalformedReply, match="shape"):
        arrayrecord_to_flat(wrong, s.layout)
    missing = ArrayRecord({k: rec[k] for k in list(rec.keys())[1:]})
    with pytest.raises(MalformedReply, match="missing"):
        arrayrecord_to_flat(missing, s.layout)


def test_strategy_matches_defense_and_drops_bad_replies(setup, tmp_path):
    cfg, s = setup
    strategy = _strategy(setup, tmp_path, "flame")
    nodes = [11, 12, 13, 14, 15, 16, 17, 18]
    instr = _instructions(strategy, setup, nodes)
    g = s.initial_params
    gen = torch.Generator().manual_seed(0)
    good = [g + 0.01 * torch.randn(s.layout.dim, generator=gen) for _ in range(3)]
    nan = g.clone()
    nan[0] = float("inf")
    replies = [
        _reply(instr[11], _content(good[0], s.layout, 100, cid=0)),
        _reply(instr[12], _content(good[1], s.layout, 100, cid=1)),
        _reply(instr[13], _content(good[2], s.layout, 100, cid=2)),
        _reply(instr[14], error=Error(code=2, reason="ClientApp crashed")),
        _reply(instr[15], _content(nan, s.layout, 100)),  # non-finite
        _reply(instr[16], RecordDict({"metrics": MetricRecord({"num-examples": 5})})),  # no arrays
        _reply(instr[17], RecordDict({"arrays": flat_to_arrayrecord(g, s.layout)})),  # no num-examples
        _reply(instr[18], _content(good[0], s.layout, 100, cid=0)),  # duplicate client id
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert metrics["num-replies"] == 8 and metrics["num-dropped"] == 5
    assert sorted(metrics["dropped-node-ids"]) == [14, 15, 16, 17, 18]
    reasons = {d["node_id"]: d["reason"] for d in strategy.history[-1]["dropped"]}
    assert "ClientApp crashed" in reasons[14] and "non-finite" in reasons[15]
    assert "ArrayRecord" in reasons[16] and "num-examples" in reasons[17] and "already replied" in reasons[18]
    # the defense saw exactly the three good updates, with the simulator's generator
    expected = strategy.defense.aggregate(RoundInput(
        g, torch.stack(good) - g, s.layout, 1, [0, 1, 2], torch.full((3,), 100.0), torch_stream(cfg.seed, "defense", 1)))
    assert torch.allclose(arrayrecord_to_flat(arrays, s.layout), expected.global_params, atol=1e-6)
    assert metrics["num-accepted"] + metrics["num-rejected"] == 3
    assert "info.clip_bound" in metrics
    lines = [json.loads(x) for x in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "round" and lines[-1]["round"] == 1
    assert sorted(lines[-1]["accepted_client_ids"] + lines[-1]["rejected_client_ids"]) == [0, 1, 2]


def test_all_replies_bad_keeps_global(setup, tmp_path):
    _, s = setup
    strategy = _strategy(setup, tmp_path)
    instr = _instructions(strategy, setup, [1, 2])
    arrays, metrics = strategy.aggregate_train(1, [_reply(instr[1], error=Error(code=0, reason="timeout")),
                                                   _reply(instr[2], error=Error(code=0, reason="timeout"))])
    assert arrays is None and metrics["num-dropped"] == 2 and metrics["num-accepted"] == 0


def test_fedavg_defense_is_weighted_mean(setup, tmp_path):
    _, s = setup
    strategy = _strategy(setup, tmp_path, "fedavg")
    instr = _instructions(strategy, setup, [1, 2])
    g = s.initial_params
    a, b = g + 1.0, g - 0.5
    arrays, _ = strategy.aggregate_train(1, [_reply(instr[1], _content(a, s.layout, 100, 0)),
                                             _reply(instr[2], _content(b, s.layout, 300, 1))])
    assert torch.allclose(arrayrecord_to_flat(arrays, s.layout), g + (100 * 1.0 + 300 * -0.5) / 400, atol=1e-5)


def _train_message(setup, round_):
    _, s = setup
    content = RecordDict({"arrays": flat_to_arrayrecord(s.initial_params, s.layout),
                          "config": ConfigRecord({"server-round": round_})})
    return Message(content, dst_node_id=7, message_type=MessageType.TRAIN)


def test_client_app_trains_like_the_simulator(setup, tmp_path):
    """Node p trains exactly as the simulator's client p (same partition, same random stream)."""
    cfg, s = setup
    client = make_client_app(APP)
    ctx = Context(run_id=1, node_id=7, node_config={"partition-id": 1, "num-partitions": 3}, state=RecordDict(), run_config=RC)
    reply = client(_train_message(setup, 2), ctx)
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    local = arrayrecord_to_flat(reply.content["arrays"], s.layout)
    updates, _, sizes = train_clients(s, s.initial_params, [1], 2)
    assert torch.allclose(local - s.initial_params, updates[0], atol=1e-6)
    m = reply.content["metrics"]
    assert m["client-id"] == 1 and m["num-examples"] == sizes[0] == len(s.client_indices[1])


def test_client_app_error_becomes_error_reply(setup):
    client = make_client_app(APP)
    ctx = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 5}, state=RecordDict(), run_config=RC)
    with pytest.raises(Exception, match="num-partitions=5"):
        client(_train_message(setup, 1), ctx)  # Flower's runtime turns this into an error reply


def test_run_config_resolution(tmp_path):
    cfg = experiment_from_run_config({"fedshield-config": "configs/synthetic3_flame.yaml", "defense": "fedavg",
                                      "seed": 7, "fedshield-set": "train.epochs=2; attack.poison_per_batch=5"}, APP)
    assert (cfg.defense.name, cfg.seed, cfg.train.epochs, cfg.attack.poison_per_batch) == ("fedavg", 7, 2, 5)
    assert experiment_from_run_config({"fedshield-config": "synthetic3"}).num_clients == 3
    assert experiment_from_run_config({"fedshield-config": "demo", "seed": -1}).name == "demo"
    with pytest.raises(ConfigError, match="no such file"):
        experiment_from_run_config({"fedshield-config": "nope.yaml"}, tmp_path)
    with pytest.raises(ConfigError, match="partition-id"):
        client_id_from_node_config({}, cfg)
    assert client_id_from_node_config({"partition-id": 2, "num-partitions": 3}, cfg) == 2


def test_fedshield_imports_without_flower():
    """The simulator and CLI never need Flower: import them with flwr made unimportable."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'flwr' or name.startswith('flwr.'): raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import fedshield, fedshield.sim, fedshield.cli, fedshield.defenses\n"
        "assert 'flwr' not in sys.modules\n"
        "try:\n"
        "    import fedshield.flower\n"
        "except ImportError as e:\n"
        "    assert 'fedshield[flower]' in str(e)\n"
        "else:\n"
        "    raise SystemExit('fedshield.flower imported without flwr')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_neurotoxin_trains_the_same_in_the_simulator_and_through_flower(tmp_path):
    """A node keeps no memory between messages; the strategy sends the previous round's global model with the
    train message, so Neurotoxin's mask (top-k of G_t - G_{t-1}) is the simulator's in round 2."""
    rc = {"fedshield-config": "configs/synthetic3_flame.yaml", "fedshield-set": "attack.name=neurotoxin"}
    cfg, s = setup_for_run_config(rc, APP)
    strategy = FedShieldStrategy(s.new_defense(), s.layout, seed=cfg.seed, num_clients=cfg.num_clients,
                                 min_available_nodes=3, min_train_nodes=3)
    grid = FakeGrid([11, 12, 13])
    g1 = s.initial_params
    g2 = g1 + 0.01 * torch.randn(s.layout.dim, generator=torch.Generator().manual_seed(4))
    first = list(strategy.configure_train(1, flat_to_arrayrecord(g1, s.layout), ConfigRecord(), grid))
    assert all("previous-arrays" not in m.content for m in first)  # round 1: nothing before it
    second = list(strategy.configure_train(2, flat_to_arrayrecord(g2, s.layout), ConfigRecord(), grid))
    assert all(torch.equal(arrayrecord_to_flat(m.content["previous-arrays"], s.layout), g1) for m in second)

    client = make_client_app(APP)
    attacker = 2  # attack.attacker_ids of the config
    ctx = Context(run_id=1, node_id=13, node_config={"partition-id": attacker, "num-partitions": 3},
                  state=RecordDict(), run_config=rc)
    reply = client(second[0], ctx)  # a fresh context: nothing carried over from round 1
    got = arrayrecord_to_flat(reply.content["arrays"], s.layout) - g2
    sim, malicious, _ = train_clients(s, g2, [0, 1, 2], 2, previous_global=g1)
    assert malicious == [False, False, True] and reply.content["metrics"]["malicious"] == 1
    assert torch.allclose(got, sim[attacker], atol=1e-6)
    without, _, _ = train_clients(s, g2, [attacker], 2, previous_global=None)  # what a node without the state does
    assert not torch.allclose(got, without[0], atol=1e-4)


def test_selected_clients_go_to_their_nodes_in_one_message_each_and_come_back_one_by_one(setup, tmp_path):
    """``select_clients`` + ``client_nodes``: one message per node naming its clients; a multi-client reply
    is split per client, and one bad client is dropped without the others."""
    cfg, s = setup
    strategy = _strategy(setup, tmp_path, "fedavg", select_clients=lambda t: [2, 0, 1],
                         client_nodes={0: 21, 1: 22, 2: 21})
    instr = _instructions(strategy, setup, [21, 22])
    assert sorted(instr) == [21, 22]
    assert list(instr[21].content["config"]["client-ids"]) == [0, 2]
    assert list(instr[22].content["config"]["client-ids"]) == [1]
    g = s.initial_params
    w = {c: g + 0.01 * (c + 1) * torch.ones(s.layout.dim) for c in range(3)}
    both = RecordDict({
        "arrays.0": flat_to_arrayrecord(w[0], s.layout), "metrics.0": MetricRecord({"num-examples": 10, "client-id": 0}),
        "arrays.2": flat_to_arrayrecord(w[2], s.layout), "metrics.2": MetricRecord({"num-examples": 30, "client-id": 2}),
    })
    wrong_id = RecordDict({"arrays.1": flat_to_arrayrecord(w[1], s.layout),
                           "metrics.1": MetricRecord({"num-examples": 20, "client-id": 2})})
    replies = [_reply(instr[21], both), _reply(instr[22], wrong_id)]
    for r, node in zip(replies, (21, 22)):
        r.metadata.__dict__["_src_node_id"] = node
    arrays, metrics = strategy.aggregate_train(1, replies)
    row = strategy.history[-1]
    assert row["accepted_client_ids"] == [0, 2]
    assert row["dropped"] == [{"node_id": 22, "client_id": 1, "reason": "arrays of client 1 carry client-id 2"}]
    expected = g + (10 * (w[0] - g) + 30 * (w[2] - g)) / 40  # FedAvg weighted by num-examples
    assert torch.allclose(arrayrecord_to_flat(arrays, s.layout), expected, atol=1e-6)


def test_neurotoxin_state_reaches_every_client_of_a_multi_client_message(tmp_path):
    """With the simulator's selection and two clients on one node, the round-2 message for that node carries
    ``previous-arrays`` once and both of its clients (benign 0, Neurotoxin attacker 2) train as in the simulator."""
    rc = {"fedshield-config": "configs/synthetic3_flame.yaml", "fedshield-set": "attack.name=neurotoxin"}
    cfg, s = setup_for_run_config(rc, APP)
    strategy = FedShieldStrategy(s.new_defense(), s.layout, seed=cfg.seed, num_clients=cfg.num_clients,
                                 select_clients=lambda t: [0, 1, 2], client_nodes={0: 21, 1: 22, 2: 21},
                                 min_available_nodes=2, min_train_nodes=2)
    grid = FakeGrid([21, 22])
    g1 = s.initial_params
    g2 = g1 + 0.01 * torch.randn(s.layout.dim, generator=torch.Generator().manual_seed(4))
    list(strategy.configure_train(1, flat_to_arrayrecord(g1, s.layout), ConfigRecord(), grid))
    second = {m.metadata.dst_node_id: m for m in
              strategy.configure_train(2, flat_to_arrayrecord(g2, s.layout), ConfigRecord(), grid)}
    assert list(second[21].content["config"]["client-ids"]) == [0, 2]
    ctx = Context(run_id=1, node_id=21, node_config={"partition-id": 0, "num-partitions": 2},
                  state=RecordDict(), run_config=rc)
    reply = make_client_app(APP)(second[21], ctx)
    sim, malicious, _ = train_clients(s, g2, [0, 1, 2], 2, previous_global=g1)
    assert malicious == [False, False, True]
    for cid in (0, 2):
        got = arrayrecord_to_flat(reply.content[f"arrays.{cid}"], s.layout) - g2
        assert torch.allclose(got, sim[cid], atol=1e-6), cid
        assert reply.content[f"metrics.{cid}"]["malicious"] == int(cid == 2)
    without, _, _ = train_clients(s, g2, [2], 2, previous_global=None)
    got = arrayrecord_to_flat(reply.content["arrays.2"], s.layout) - g2
    assert not torch.allclose(got, without[0], atol=1e-4)
