"""The Flower ClientApp: a SuperNode hosts one or more fedshield clients, trained by the simulator's own code.

A node hosts the clients of its ``partition-id`` (one client when ``num-partitions`` equals the config's
``num_clients``, else every client c with c mod ``num-partitions`` = ``partition-id``; see
:func:`~fedshield.flower.runconfig.hosted_clients`). A train message names its clients in its ConfigRecord:
``client-ids`` (several, trained in this one process, as the simulator trains a round), ``client-id``, or
none when the node hosts a single client. A ``query`` message answers the node's partition. Client c's data
comes from ``build_setup`` on the same config, so it is exactly the simulator's client c. Training calls
:func:`fedshield.sim.loop.train_clients` in the server's round: a client trains benignly, or runs the
configured attack if the config lists it as an attacker.

State between rounds: a deployed SuperNode starts a fresh process per message, so the node keeps nothing in
memory. What an attack reads from earlier rounds (Neurotoxin: the model the previous round started from) comes
with the message instead: the strategy sends it as ``previous-arrays`` next to ``arrays``.

Reply: ``arrays`` = the local model W = G + Δ (one array per layout tensor), ``metrics`` = ``num-examples``,
``client-id``, ``malicious`` (0/1, informational), ``train-s``, ``kernels`` (0/1: fedshield's C kernels), and the wall-clock times ``t-process``,
``t-handler``, ``t-setup``, ``t-trained`` (see :func:`timings`); for ``client-ids``, one ``arrays.<cid>`` /
``metrics.<cid>`` pair per client.
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
from .processes import process_start_time
from .records import PREVIOUS_ARRAYS, arrayrecord_to_flat, flat_to_arrayrecord
from .runconfig import client_id_for_message

__all__ = ["make_client_app", "app"]


def timings(t_handler: float, t_setup: float) -> dict[str, float]:
    """Wall-clock times of this message's ClientApp process (for ``benchmarks/flower_round_time.py``):
    process start, handler entry (after Python, imports and app loading), set-up built, reply ready."""
    t_start = process_start_time()
    return {
        "t-process": t_start if t_start is not None else t_handler,
        "t-handler": t_handler,
        "t-setup": t_setup,
        "t-trained": time.time(),
    }


def make_client_app(base_dir: str | Path | None = None) -> ClientApp:
    """A ClientApp; relative ``fedshield-config`` paths are resolved against ``base_dir`` (the app folder)."""
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        t0 = time.perf_counter()
        t_handler = time.time()
        cfg, setup = setup_for_run_config(context.run_config, base_dir)
        t_setup = time.time()
        config = msg.content["config"]
        several = "client-ids" in config  # the server's selection of this node's clients, in one message
        requested = list(config["client-ids"]) if several else [config.get("client-id")]
        cids = [client_id_for_message(context.node_config, cfg, c) for c in requested]
        round_ = int(config["server-round"])
        global_params = arrayrecord_to_flat(msg.content["arrays"], setup.layout)
        previous = (arrayrecord_to_flat(msg.content[PREVIOUS_ARRAYS], setup.layout)
                    if PREVIOUS_ARRAYS in msg.content else None)
        updates, malicious, sizes = train_clients(setup, global_params, cids, round_, previous)
        content = RecordDict()
        for cid, delta, bad, size in zip(cids, updates, malicious, sizes):
            metrics = MetricRecord(
                {
                    "num-examples": int(size),
                    "client-id": cid,
                    "malicious": int(bad),
                    "train-s": round(time.perf_counter() - t0, 4),
                    # 1: trained with fedshield's C kernels (fedshield.kernels), 0: PyTorch's operations
                    "kernels": int(setup.trainer.fast_kernels),
                    **timings(t_handler, t_setup),
                }
            )
            suffix = f".{cid}" if several else ""
            content[f"arrays{suffix}"] = flat_to_arrayrecord(global_params + delta, setup.layout)
            content[f"metrics{suffix}"] = metrics
        return Message(content, reply_to=msg)

    @client.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Accuracy of the received model on this client's own partition (federated evaluation, optional)."""
        cfg, setup = setup_for_run_config(context.run_config, base_dir)
        config = msg.content.config_records.get("config")
        cid = client_id_for_message(context.node_config, cfg, config.get("client-id") if config is not None else None)
        model = setup.model_fn()
        load_flat_params(model, arrayrecord_to_flat(msg.content["arrays"], setup.layout))
        x, y = setup.client_data(cid)
        metrics = MetricRecord({"num-examples": int(len(y)), "accuracy": accuracy(model, x, y, cfg.eval.batch_size)})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    @client.query()
    def query(msg: Message, context: Context) -> Message:
        """Which partition this node is (the server maps clients to nodes with it)."""
        node = context.node_config
        metrics = MetricRecord({k: int(node[k]) for k in ("partition-id", "num-partitions") if k in node})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return client


app: Optional[ClientApp] = make_client_app()
