"""Which SuperNode hosts which fedshield client: ask every node its partition, map client c to the node of
partition c mod P (:func:`~fedshield.flower.runconfig.hosted_clients` is the node side of the same rule)."""

from __future__ import annotations

import time
from typing import Any, Mapping

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

__all__ = ["clients_to_nodes", "discover_client_nodes"]


def clients_to_nodes(partitions: Mapping[int, tuple[int, int]], num_clients: int) -> dict[int, int]:
    """``partitions``: node id → (partition-id, num-partitions). Returns client id → node id; a clear error if
    the nodes do not form exactly one node per partition 0..P−1."""
    if not partitions:
        raise RuntimeError("no SuperNode answered")
    sizes = {p for _, p in partitions.values()}
    if len(sizes) != 1:
        raise RuntimeError(f"SuperNodes disagree on num-partitions: {sorted(sizes)}")
    nparts = sizes.pop()
    if not 1 <= nparts <= num_clients:
        raise RuntimeError(f"num-partitions={nparts} must be between 1 and num_clients={num_clients}")
    node_of: dict[int, int] = {}
    for node, (pid, _) in sorted(partitions.items()):
        if pid in node_of:
            raise RuntimeError(f"partition-id {pid} is claimed by nodes {node_of[pid]} and {node}")
        node_of[pid] = node
    missing = [p for p in range(nparts) if p not in node_of]
    if missing:
        raise RuntimeError(f"no SuperNode has partition-id {missing[:10]} of {nparts}")
    return {c: node_of[c % nparts] for c in range(num_clients)}


def discover_client_nodes(grid: Grid, num_clients: int, min_nodes: int, timeout: float, poll: float = 0.2) -> dict[int, int]:
    """Wait for ``min_nodes`` nodes, send each a ``query``, and map clients to nodes from the answers."""
    deadline = time.time() + timeout
    while len(nodes := list(grid.get_node_ids())) < min_nodes:
        if time.time() > deadline:
            raise RuntimeError(f"only {len(nodes)} of {min_nodes} SuperNodes connected within {timeout:.0f} s")
        time.sleep(poll)
    messages = [Message(RecordDict({"config": ConfigRecord({})}), message_type=MessageType.QUERY, dst_node_id=n)
                for n in nodes]
    partitions: dict[int, tuple[int, int]] = {}
    for reply in grid.send_and_receive(messages, timeout=max(1.0, deadline - time.time())):
        node = int(reply.metadata.src_node_id)
        if reply.has_error():
            raise RuntimeError(f"SuperNode {node} failed the partition query: {reply.error.reason}")
        metrics: Any = reply.content.metric_records.get("metrics") or {}
        if "partition-id" not in metrics:
            raise RuntimeError(f"SuperNode {node} has no partition-id in its node config")
        partitions[node] = (int(metrics["partition-id"]), int(metrics.get("num-partitions", num_clients)))
    return clients_to_nodes(partitions, num_clients)
