"""The pieces of ``fedshield federate`` that need no running deployment: the app it writes carries the exact
experiment, the round log becomes the simulator's metrics rows, the reply polling, and finding Flower's
binaries without ``.venv/bin`` on PATH."""

import math
import os
import tomllib
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="Flower is not installed (pip install 'fedshield[flower]')")

from fedshield.config import dump_config, load_config  # noqa: E402
from fedshield.flower.federate import rows_from_log, write_app  # noqa: E402
from fedshield.flower.federation import Federation  # noqa: E402
from fedshield.flower.polling import PollingGrid  # noqa: E402
from fedshield.flower.processes import BIN_DIR, flower_bin, flower_env  # noqa: E402
from fedshield.flower.runconfig import experiment_from_run_config  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "flower" / "configs" / "synthetic3_flame.yaml"


def test_the_written_app_carries_the_resolved_experiment(tmp_path):
    cfg = load_config(CONFIG, ["rounds=2", "train.lr=0.0125", "attack.params.factor=20", "attack.name=model_replacement"])
    app = write_app(tmp_path / "app", cfg, {"num-server-rounds": 2, "log-file": "/x/rounds.jsonl"})
    toml = tomllib.loads((app / "pyproject.toml").read_text())
    run_config = toml["tool"]["flwr"]["app"]["config"]
    assert run_config["num-server-rounds"] == 2 and run_config["log-file"] == "/x/rounds.jsonl"
    assert toml["tool"]["flwr"]["app"]["components"]["clientapp"] == "fedshield.flower.client_app:app"
    # a node elsewhere, with no file at all, rebuilds exactly this experiment from the run config
    assert dump_config(experiment_from_run_config(run_config, base_dir=None)) == dump_config(cfg)


def test_round_log_becomes_the_simulators_rows():
    events = [
        {"event": "start"},
        {"event": "evaluate", "round": 0, "ma": 0.1, "ba": 0.0, "eval_s": 0.01},
        {"event": "round", "round": 1, "accepted_client_ids": [0, 1], "rejected_client_ids": [2],
         "malicious_client_ids": [2], "tp": 1, "fp": 0, "tn": 2, "fn": 0, "dropped": [],
         "info": {"clip_bound": 0.5}, "aggregate_s": 0.25, "round_s": 2.0},
        {"event": "evaluate", "round": 1, "ma": 0.75, "ba": 0.125, "eval_s": 0.5},
        {"event": "round", "round": 2, "accepted_client_ids": [0, 1, 2], "rejected_client_ids": [],
         "malicious_client_ids": [2], "tp": 0, "fp": 0, "tn": 2, "fn": 1, "dropped": [{"node_id": 9, "reason": "x"}],
         "info": {}, "aggregate_s": 0.5, "round_s": 1.5},
        {"event": "finish"},
    ]
    r1, r2 = rows_from_log(events)
    assert (r1["round"], r1["ma"], r1["ba"], r1["selected"], r1["accepted"], r1["malicious"]) == (1, 0.75, 0.125, 3, 2, 1)
    assert r1["train_s"] == 1.75 and r1["aggregate_s"] == 0.25 and r1["eval_s"] == 0.5
    assert r1["flame_tpr"] == 1.0 and r1["flame_tnr"] == 1.0 and r1["info.clip_bound"] == 0.5
    assert r1["rejected_clients"] == "2" and r1["dropped"] == 0
    assert math.isnan(r2["ma"]) and r2["eval_s"] == 0.0  # round 2 not evaluated
    assert r2["fn"] == 1 and r2["flame_tnr"] == round(2 / 3, 4) and math.isnan(r2["flame_tpr"])
    assert r2["rejected_clients"] == "" and r2["dropped"] == 1
    assert "detection_rate" not in r1  # an image run's evaluator reports MA and BA only


def test_round_log_keeps_the_traffic_detection_metrics():
    """A traffic run's evaluator also reports detection rate, FPR and F1; the federated rows keep them, as the
    simulator's metrics.csv does."""
    events = [
        {"event": "evaluate", "round": 1, "time": 5.0, "ma": 0.9, "ba": 0.02, "detection_rate": 0.81, "fpr": 0.03,
         "f1": 0.86, "eval_s": 0.1},
        {"event": "round", "round": 1, "accepted_client_ids": [0], "rejected_client_ids": [], "malicious_client_ids": [],
         "tp": 0, "fp": 0, "tn": 1, "fn": 0, "dropped": []},
    ]
    (row,) = rows_from_log(events)
    assert (row["detection_rate"], row["fpr"], row["f1"]) == (0.81, 0.03, 0.86)
    assert "time" not in row and "event" not in row and row["eval_s"] == 0.1


class _Reply:
    def __init__(self, reply_to):
        self.metadata = type("M", (), {"reply_to_message_id": reply_to})()


class _FakeGrid:
    """Replies to message i arrive at pull number i + 1."""

    def __init__(self):
        self.pulls = 0
        self.run_id = 7

    def push_messages(self, messages):
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, ids):
        self.pulls += 1
        ready = f"m{self.pulls - 1}"
        return [_Reply(ready)] if ready in ids else []


def test_polling_grid_collects_every_reply_and_delegates_the_rest():
    fake = _FakeGrid()
    grid = PollingGrid(fake, interval=0.001)
    replies = grid.send_and_receive(["a", "b", "c"], timeout=5.0)
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    assert fake.pulls == 3  # stops as soon as the last reply is in
    assert grid.run_id == 7
    with pytest.raises(ValueError, match="interval"):
        PollingGrid(fake, interval=0)


def test_polling_grid_gives_up_at_the_timeout():
    class Silent(_FakeGrid):
        def pull_messages(self, ids):
            self.pulls += 1
            return []

    grid = PollingGrid(Silent(), interval=0.01)
    assert list(grid.send_and_receive(["a"], timeout=0.05)) == []


def test_flower_binaries_are_found_without_the_venv_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    for name in ("flwr", "flower-superlink", "flower-supernode"):
        assert Path(flower_bin(name)).parent == BIN_DIR
    env = flower_env(tmp_path / "home")
    assert env["PATH"].split(os.pathsep)[0] == str(BIN_DIR)  # flower-superlink starts flower-superexec by name
    assert env["FLWR_HOME"] == str(tmp_path / "home") and env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    with pytest.raises(FileNotFoundError, match="no-such-flower-binary"):
        flower_bin("no-such-flower-binary")


def test_remote_supernode_commands_name_the_superlink_and_the_partition(tmp_path):
    fed = Federation(tmp_path, num_nodes=2, port=9555)
    cmds = fed.remote_supernode_commands("10.0.0.5")
    assert len(cmds) == 2
    assert "--superlink 10.0.0.5:9555" in cmds[1] and "'partition-id=1 num-partitions=2'" in cmds[1]
    assert "FLWR_HOME=" in cmds[0] and "flower-supernode --insecure" in cmds[0]


def test_clients_map_to_the_node_of_their_partition():
    from fedshield.flower.placement import clients_to_nodes

    # nodes 11, 22 are partitions 1 and 0 of 2: client c goes to partition c mod 2
    assert clients_to_nodes({11: (1, 2), 22: (0, 2)}, 5) == {0: 22, 1: 11, 2: 22, 3: 11, 4: 22}
    with pytest.raises(RuntimeError, match="claimed by nodes"):
        clients_to_nodes({1: (0, 2), 2: (0, 2)}, 4)
    with pytest.raises(RuntimeError, match=r"no SuperNode has partition-id \[1\]"):
        clients_to_nodes({1: (0, 2)}, 4)
    with pytest.raises(RuntimeError, match="disagree"):
        clients_to_nodes({1: (0, 2), 2: (1, 3)}, 4)
    with pytest.raises(RuntimeError, match="between 1 and num_clients"):
        clients_to_nodes({1: (0, 5)}, 4)


def test_a_node_trains_only_the_clients_it_hosts():
    from fedshield.config import ConfigError
    from fedshield.flower.runconfig import client_id_for_message, hosted_clients

    cfg = load_config(CONFIG, ["num_clients=5", "clients_per_round=5"])
    node = {"partition-id": 1, "num-partitions": 2}
    assert hosted_clients(node, cfg) == [1, 3]
    assert client_id_for_message(node, cfg, 3) == 3
    with pytest.raises(ConfigError, match="client-id=2 is not hosted"):
        client_id_for_message(node, cfg, 2)
    with pytest.raises(ConfigError, match="the server must name one"):
        client_id_for_message(node, cfg, None)
    assert client_id_for_message({"partition-id": 4, "num-partitions": 5}, cfg, None) == 4  # one client per node
    with pytest.raises(ConfigError, match="num-partitions=6"):
        hosted_clients({"partition-id": 0, "num-partitions": 6}, cfg)
