"""The NIDS FLAME run through Flower, in process: the strategy, the ClientApp and the messages of a real Flower
round, without the SuperLink (as tests/test_flower_strategy.py). It must reproduce the simulator's run."""

from pathlib import Path

import pytest
import torch

flwr = pytest.importorskip("flwr", reason="Flower is not installed (pip install 'fedshield[flower]')")
pytest.importorskip("pyarrow", reason="the traffic readers need pyarrow (pip install 'fedshield[traffic]')")

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402

from fedshield.flower import FedShieldStrategy, arrayrecord_to_flat, flat_to_arrayrecord  # noqa: E402
from fedshield.flower.client_app import make_client_app  # noqa: E402
from fedshield.flower.common import setup_for_run_config  # noqa: E402
from fedshield.sim.loop import run_round  # noqa: E402
from fedshield.sim.state import RoundState  # noqa: E402
from flowertest import FakeGrid, task_identity  # noqa: E402,F401  (task_identity: autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
# configs/nids_synthetic_flame.yaml, made small: 10 clients (5 devices x 2), 2 attackers, 3 rounds, lr 0.05
RC = {
    "fedshield-config": str(ROOT / "configs" / "nids_synthetic_flame.yaml"),
    "fedshield-set": "num_clients=10; clients_per_round=10; rounds=3; attack.num_attackers=2; "
    "train.lr=0.05; data.traffic.synthetic.num_devices=5; data.traffic.synthetic.flows_per_device=800",
}


def test_flame_on_synthetic_traffic_through_flower_matches_the_simulator(tmp_path):
    cfg, s = setup_for_run_config(RC, ROOT)
    assert s.dataset.kind == "traffic" and cfg.model == "mlp" and s.attackers == [0, 1]
    defense = s.new_defense()  # the ServerApp's defense (flower/server_app.py)
    assert defense.lam == 0.01  # FLAME's NIDS default, chosen from the dataset's domain
    strategy = FedShieldStrategy(defense=defense, layout=s.layout, seed=cfg.seed, malicious_ids=s.attackers,
                                 num_clients=cfg.num_clients, log_path=tmp_path / "rounds.jsonl",
                                 min_available_nodes=cfg.num_clients, min_train_nodes=cfg.num_clients)
    client = make_client_app(ROOT / "examples" / "flower")
    node_of = {100 + cid: cid for cid in range(cfg.num_clients)}
    params = s.initial_params.clone()
    state = RoundState(round=0, global_params=s.initial_params.clone(), defense=s.new_defense())
    for rnd in range(1, cfg.rounds + 1):
        instr = list(strategy.configure_train(rnd, flat_to_arrayrecord(params, s.layout), ConfigRecord(),
                                              FakeGrid(node_of)))
        assert len(instr) == cfg.num_clients
        replies = []
        for msg in instr:
            node = msg.metadata.dst_node_id
            ctx = Context(run_id=1, node_id=node, node_config={"partition-id": node_of[node],
                          "num-partitions": cfg.num_clients}, state=RecordDict(), run_config=RC)
            reply = client(msg, ctx)
            assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
            replies.append(Message(reply.content, reply_to=msg))
        arrays, metrics = strategy.aggregate_train(rnd, replies)
        params = arrayrecord_to_flat(arrays, s.layout)
        sim_params, row = run_round(s, state)
        state.advance(sim_params, row, 0.0)
        assert metrics["info.lam"] == 0.01 and row["info.lam"] == 0.01
        assert metrics["num-accepted"] == row["accepted"]
        assert row["malicious"] == 2 and row["fn"] == 0  # both boosted injectors rejected by the clustering
        assert torch.allclose(params, sim_params, atol=1e-5), f"round {rnd}: Flower and the simulator differ"
    result = s.evaluator.evaluate(params)
    assert set(result) >= {"ma", "ba", "detection_rate", "fpr", "f1"}
    assert result["detection_rate"] > 0.5 and result["fpr"] < 0.1  # a detector after 3 rounds, not a constant
