"""A Flower strategy (Message API) that aggregates with any registered fedshield defense.

``FedShieldStrategy`` subclasses Flower's message-based ``FedAvg`` and keeps its node sampling and message
construction; it replaces the aggregation. Each round it

1. keeps the global model it sent (``configure_train``), since ``aggregate_train`` does not receive it;
2. turns every reply into the flat layout (local model W_i → update Δ_i = W_i − G), dropping replies that are
   errors, lack the ArrayRecord or ``num-examples``, have wrong keys/shapes or non-finite values, or repeat a
   client id already seen this round; each drop is reported with its reason, none of them crashes the round;
3. calls the fedshield defense unchanged with a :class:`RoundInput` (clients sorted by fedshield client id, the
   simulator's per-round generator), and returns its global model;
4. reports the defense's ``info``, the accepted / rejected / dropped node ids (and client ids) and detection
   counts in the round's ``MetricRecord``, in :attr:`history`, and as one JSON line per event in ``log_path``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from torch import Tensor

from ..defenses import Defense, RoundInput
from ..metrics import detection_counts
from ..models import ParamLayout
from ..core.numeric import is_finite_number, is_int, is_number
from ..core.seeding import torch_stream
from .records import PREVIOUS_ARRAYS, MalformedReply, arrayrecord_to_flat, flat_to_arrayrecord

__all__ = ["FedShieldStrategy", "ParsedReply"]


class ParsedReply:
    __slots__ = ("node_id", "client_id", "local", "num_samples")

    def __init__(self, node_id: int, client_id: int, local: Tensor, num_samples: float):
        self.node_id, self.client_id, self.local, self.num_samples = node_id, client_id, local, num_samples


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, Tensor):
        return _jsonable(v.tolist())
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def _client_report(metrics: Optional[MetricRecord]) -> dict[str, float]:
    """The ClientApp's wall-clock times (``t-process`` …) from a reply's metrics, if it sent them, and ``kernels``
    (1 when it trained with fedshield's C kernels)."""
    keys = ("t-process", "t-handler", "t-setup", "t-trained", "kernels")
    if metrics is None:
        return {}
    return {k.replace("-", "_"): float(metrics[k]) for k in keys if isinstance(metrics.get(k), (int, float))}


class FedShieldStrategy(FedAvg):
    """FedAvg's sampling and messaging, fedshield's defense for aggregation.

    Parameters
    ----------
    defense:
        a fedshield :class:`Defense` (``build_defense(name, params, DefenseContext(...))``), called unchanged.
    layout:
        the experiment's :class:`ParamLayout`; replies must carry exactly its arrays.
    seed:
        experiment seed: round ``t`` uses the simulator's generator ``torch_stream(seed, "defense", t)``.
    malicious_ids, attack_start_round:
        ground truth for detection counts (fedshield client ids that attack from that round on).
    num_clients:
        valid client ids are ``0 .. num_clients-1``; a reply without a valid ``client-id`` is identified by
        its node id instead.
    log_path:
        JSON-lines file (appended): ``start``, one ``round`` and ``evaluate`` line per round, ``finish``.
    select_clients, client_nodes:
        optional: the clients of round t (``select_clients(t)``, e.g. the simulator's seeded selection) and the
        node hosting each (client id → node id, :func:`~fedshield.flower.placement.discover_client_nodes`);
        then each round sends one message per node naming its selected clients (``client-ids``), instead of
        FedAvg's random node sampling (``batch_per_node=False``: one message per client); the node answers
        ``arrays.<cid>`` / ``metrics.<cid>`` per client. ``client_nodes`` may be filled after construction.
    **fedavg_kwargs:
        passed to Flower's ``FedAvg`` (``fraction_train``, ``min_available_nodes`` …).
    """

    def __init__(
        self,
        defense: Defense,
        layout: ParamLayout,
        seed: int = 0,
        malicious_ids: Sequence[int] = (),
        attack_start_round: int = 1,
        num_clients: Optional[int] = None,
        log_path: str | Path | None = None,
        select_clients: Optional[Callable[[int], Sequence[int]]] = None,
        client_nodes: Optional[dict[int, int]] = None,
        batch_per_node: bool = True,
        **fedavg_kwargs: Any,
    ):
        super().__init__(**fedavg_kwargs)
        self.batch_per_node = batch_per_node
        self.select_clients = select_clients
        self.client_nodes: dict[int, int] = dict(client_nodes or {})
        self.defense = defense
        self.layout = layout
        self.seed = int(seed)
        self.malicious_ids = {int(i) for i in malicious_ids}
        self.attack_start_round = int(attack_start_round)
        self.num_clients = num_clients
        self.log_path = Path(log_path) if log_path else None
        self.history: list[dict[str, Any]] = []
        self._global: Optional[Tensor] = None
        self._global_round: Optional[int] = None
        self._t_configure = time.time()

    # ------------------------------------------------------------------ logging
    def log_event(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append ``{"event": event, "time": …, **fields}`` to :attr:`history` and the JSON-lines log."""
        rec = {"event": event, "time": round(time.time(), 4), **_jsonable(fields)}
        self.history.append(rec)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        return rec

    def summary(self) -> None:
        super().summary()
        from flwr.supercore import log
        from logging import INFO

        log(INFO, "\t└──> fedshield defense: %r", self.defense)

    # ------------------------------------------------------------------ train
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Any) -> Iterable[Message]:
        previous = self._global if self._global_round == server_round - 1 else None
        self._global = arrayrecord_to_flat(arrays, self.layout)  # the model the clients start from
        self._global_round = server_round
        self._t_configure = time.time()
        if self.select_clients is None:
            messages = list(super().configure_train(server_round, arrays, config, grid))
        else:
            groups: dict[int, list[int]] = {}
            for cid in sorted(self.select_clients(server_round)):
                if cid not in self.client_nodes:
                    raise RuntimeError(f"client {cid} has no SuperNode (known: {len(self.client_nodes)} clients)")
                groups.setdefault(self.client_nodes[cid] if self.batch_per_node else -1 - cid, []).append(int(cid))
            messages = []
            for cids in groups.values():  # one message (one ClientApp process) per node and round, or per client
                node = self.client_nodes[cids[0]]
                record = ConfigRecord({**dict(config), "server-round": server_round, "client-ids": cids})
                content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: record})
                messages.append(Message(content=content, message_type=MessageType.TRAIN, dst_node_id=node))
        if previous is not None:  # what attacks read from the last round (a node keeps no memory between messages)
            record = flat_to_arrayrecord(previous, self.layout)
            for msg in messages:  # a message with several clients: every one of them reads it
                msg.content[PREVIOUS_ARRAYS] = record
        return messages

    def _client_id(self, metrics: Optional[MetricRecord], node_id: int) -> int:
        if metrics is not None and "client-id" in metrics:
            cid = metrics["client-id"]
            if is_int(cid):
                if self.num_clients is None or 0 <= cid < self.num_clients:
                    return int(cid)
            raise MalformedReply(f"client-id={cid!r} is not a client of this experiment")
        return int(node_id)

    def parse_reply(self, msg: Message) -> ParsedReply:
        """One reply → (node, client id, local model, sample count); :class:`MalformedReply` if unusable."""
        node_id = int(msg.metadata.src_node_id)
        if msg.has_error():
            err = msg.error
            raise MalformedReply(f"error reply (code {err.code}): {err.reason}")
        if not msg.has_content():
            raise MalformedReply("reply has no content")
        return self.parse_content(node_id, msg.content)

    def parse_content(self, node_id: int, content: RecordDict) -> ParsedReply:
        """One client's ArrayRecord and MetricRecord → :class:`ParsedReply`; :class:`MalformedReply` if unusable."""
        record = content.array_records.get(self.arrayrecord_key)
        if record is None:
            if len(content.array_records) != 1:
                raise MalformedReply(f"reply has no ArrayRecord {self.arrayrecord_key!r}")
            record = next(iter(content.array_records.values()))
        metrics = content.metric_records.get("metrics")
        if metrics is None and len(content.metric_records) == 1:
            metrics = next(iter(content.metric_records.values()))
        if metrics is None or self.weighted_by_key not in metrics:
            raise MalformedReply(f"reply has no MetricRecord with {self.weighted_by_key!r}")
        n = metrics[self.weighted_by_key]
        if not is_finite_number(n) or n <= 0:
            raise MalformedReply(f"{self.weighted_by_key}={n!r} must be a positive number")
        local = arrayrecord_to_flat(record, self.layout)
        return ParsedReply(node_id, self._client_id(metrics, node_id), local, float(n))

    def parse_replies(self, msg: Message) -> list[tuple[Optional[int], ParsedReply | MalformedReply, dict[str, float]]]:
        """Every client in a reply: (client id named by the reply or None, parsed or the reason it is unusable,
        the ClientApp's timings). A node that trained several clients answers ``arrays.<cid>`` /
        ``metrics.<cid>`` pairs; each is parsed on its own, so one bad client does not drop the others."""
        try:
            if msg.has_error() or not msg.has_content():
                return [(None, self.parse_reply(msg), {})]
        except MalformedReply as exc:
            return [(None, exc, {})]
        content = msg.content
        prefix = f"{self.arrayrecord_key}."
        cids = sorted(int(k[len(prefix):]) for k in content.array_records if k.startswith(prefix) and k[len(prefix):].isdigit())
        parts = [(None, content)] if not cids else [
            (cid, RecordDict({self.arrayrecord_key: content.array_records[f"{prefix}{cid}"],
                              **({"metrics": content.metric_records[f"metrics.{cid}"]}
                                 if f"metrics.{cid}" in content.metric_records else {})}))
            for cid in cids
        ]
        out: list[tuple[Optional[int], ParsedReply | MalformedReply, dict[str, float]]] = []
        node_id = int(msg.metadata.src_node_id)
        for cid, part in parts:
            try:
                p = self.parse_content(node_id, part)
                if cid is not None and p.client_id != cid:
                    raise MalformedReply(f"arrays of client {cid} carry client-id {p.client_id}")
                out.append((cid, p, _client_report(part.metric_records.get("metrics"))))
            except MalformedReply as exc:
                out.append((cid, exc, {}))
        return out

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[Optional[ArrayRecord], Optional[MetricRecord]]:
        t0 = time.time()
        if self._global is None or self._global_round != server_round:
            raise RuntimeError("aggregate_train called without configure_train for this round")
        replies = list(replies)
        parsed: list[ParsedReply] = []
        dropped: list[dict[str, Any]] = []
        seen: set[int] = set()
        timing: list[dict[str, Any]] = []
        for msg in replies:
            node_id = int(msg.metadata.src_node_id)
            for cid, p, times in self.parse_replies(msg):
                if isinstance(p, ParsedReply) and p.client_id in seen:
                    p = MalformedReply(f"client-id {p.client_id} already replied this round")
                if isinstance(p, MalformedReply):
                    dropped.append({"node_id": node_id, **({"client_id": cid} if cid is not None else {}), "reason": str(p)})
                    continue
                seen.add(p.client_id)
                parsed.append(p)
                timing.append({"client_id": p.client_id, "node_id": node_id, **times})
        parsed.sort(key=lambda p: p.client_id)

        row: dict[str, Any] = {
            "round": server_round,
            "replies": len(replies),
            "dropped": dropped,
            "dropped_node_ids": [d["node_id"] for d in dropped],
        }
        new_global: Optional[Tensor] = None
        accepted_mask: Optional[Tensor] = None
        info: dict[str, Any] = {}
        if parsed:
            g = self._global
            inp = RoundInput(
                global_params=g,
                updates=torch.stack([p.local - g for p in parsed]),
                layout=self.layout,
                round=server_round,
                client_ids=[p.client_id for p in parsed],
                num_samples=torch.tensor([p.num_samples for p in parsed], dtype=torch.float32),
                generator=torch_stream(self.seed, "defense", server_round),
            )
            try:
                agg = self.defense.aggregate(inp)
                new_global = agg.global_params.detach().to("cpu", torch.float32)
                accepted_mask = agg.accepted.to(torch.bool).cpu()
                info = {k: (float(v) if isinstance(v, (int, float, bool)) else v) for k, v in agg.info.items()}
            except ValueError as exc:  # the defense refused this round's input: keep the global model
                row["defense_error"] = str(exc)
        if accepted_mask is None:
            accepted_mask = torch.zeros(len(parsed), dtype=torch.bool)
        acc = [p for p, a in zip(parsed, accepted_mask.tolist()) if a]
        rej = [p for p, a in zip(parsed, accepted_mask.tolist()) if not a]
        mal = torch.tensor(
            [p.client_id in self.malicious_ids and server_round >= self.attack_start_round for p in parsed],
            dtype=torch.bool,
        )
        counts = detection_counts(accepted_mask, mal) if parsed else {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
        t1 = time.time()
        row.update(
            {
                "accepted_node_ids": [p.node_id for p in acc],
                "accepted_client_ids": [p.client_id for p in acc],
                "rejected_node_ids": [p.node_id for p in rej],
                "rejected_client_ids": [p.client_id for p in rej],
                "malicious_client_ids": [p.client_id for p, m in zip(parsed, mal.tolist()) if m],
                **counts,
                "info": info,
                "aggregate_s": round(t1 - t0, 4),
                "round_s": round(t1 - self._t_configure, 4),
                "t_sent": round(self._t_configure, 4),
                "t_received": round(t0, 4),
                "clients": timing,
            }
        )
        self.log_event("round", **row)

        metrics = MetricRecord(
            {
                "num-replies": len(replies),
                "num-accepted": len(acc),
                "num-rejected": len(rej),
                "num-dropped": len(dropped),
                "accepted-node-ids": [p.node_id for p in acc],
                "rejected-node-ids": [p.node_id for p in rej],
                "dropped-node-ids": [d["node_id"] for d in dropped],
                "accepted-client-ids": [p.client_id for p in acc],
                "rejected-client-ids": [p.client_id for p in rej],
                **counts,
                "aggregate-s": round(t1 - t0, 4),
                **{f"info.{k}": v for k, v in info.items() if is_number(v)},
            }
        )
        arrays = flat_to_arrayrecord(new_global, self.layout) if new_global is not None else None
        return arrays, metrics

    # ------------------------------------------------------------------ evaluation
    def server_evaluate_fn(
        self, evaluate: Callable[[Tensor], dict[str, float]], every: int = 1, last_round: Optional[int] = None
    ) -> Callable[[int, ArrayRecord], Optional[MetricRecord]]:
        """Wrap a fedshield evaluator (flat → {"ma", "ba"}) as Flower's ``evaluate_fn``; logs ``evaluate``.
        Evaluates the initial model (round 0), every ``every``-th round and ``last_round``, as the simulator."""

        def fn(server_round: int, arrays: ArrayRecord) -> Optional[MetricRecord]:
            if server_round % every and server_round != last_round:
                return None
            t0 = time.time()
            res = {k: float(v) for k, v in evaluate(arrayrecord_to_flat(arrays, self.layout)).items()}
            self.log_event("evaluate", round=server_round, **res, eval_s=round(time.time() - t0, 4))
            return MetricRecord(res)

        return fn
