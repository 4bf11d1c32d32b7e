"""The Flower ClientApp: one SuperNode = one fedshield client, trained by the simulator's own code.

The node's ``partition-id`` is its fedshield client id (``num-partitions`` must equal the config's
``num_clients``), and the partition comes from ``build_setup`` on the same config, so node p holds exactly the
simulator's client p. Training calls :func:`fedshield.sim.loop.train_clients` for ``[cid]`` in the server's
round: the client trains benignly, or runs the configured attack if the config lists it as an attacker.

State between rounds: a deployed SuperNode starts a fresh process per message, so the node keeps nothing in
memory. What an attack reads from earlier rounds (Neurotoxin: the model the previous round started from) comes
with the message instead: the strategy sends it as ``previous-arrays`` next to ``arrays``.

Reply: ``arrays`` = the local model W = G + Δ (one array per layout tensor), ``metrics`` = ``num-examples``,
``client-id``, ``malicious`` (0/1, informational), ``train-s``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..models import load_flat_params
from ..sim import accuracy, train_clients
from .common import setup_for_run_config
from .records import PREVIOUS_ARRAYS, arrayrecord_to_flat, flat_to_arrayrecord
from .runconfig import client_id_from_node_config

__all__ = ["make_client_app", "app"]


def make_client_app(base_dir: str | Path | None = None) -> ClientApp:
    """A ClientApp; relative ``fedshield-config`` paths are resolved against ``base_dir`` (the app folder)."""
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        t0 = time.perf_counter()
        cfg, setup = setup_for_run_config(context.run_config, base_dir)
        cid = client_id_from_node_config(context.node_config, cfg)
        round_ = int(msg.content["config"]["server-round"])
        global_params = arrayrecord_to_flat(msg.content["arrays"], setup.layout)
        previous = (arrayrecord_to_flat(msg.content[PREVIOUS_ARRAYS], setup.layout)
                    if PREVIOUS_ARRAYS in msg.content else None)
        updates, malicious, sizes = train_clients(setup, global_params, [cid], round_, previous)
        delta = updates[0]
        metrics = MetricRecord(
            {
                "num-examples": int(sizes[0]),
                "client-id": cid,
                "malicious": int(malicious[0]),
                "train-s": round(time.perf_counter() - t0, 4),
            }
        )
        content = RecordDict({"arrays": flat_to_arrayrecord(global_params + delta, setup.layout), "metrics": metrics})
        return Message(content, reply_to=msg)

    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Accuracy of the received model on this client's own partition (federated evaluation, optional)."""
        cfg, setup = setup_for_run_config(context.run_config, base_dir)
        cid = client_id_from_node_config(context.node_config, cfg)
        model = setup.model_fn()
        load_flat_params(model, arrayrecord_to_flat(msg.content["arrays"], setup.layout))
        x, y = setup.client_data(cid)
        metrics = MetricRecord({"num-examples": int(len(y)), "accuracy": accuracy(model, x, y, cfg.eval.batch_size)})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return client


app: Optional[ClientApp] = make_client_app()
