"""Reply validation: a hostile or broken reply never reaches the global model.

Every train reply is checked before any other wrapper sees it; a reply is dropped (and counted, with its
partition id and reason) when it is an error reply, lacks exactly one ArrayRecord/MetricRecord, lacks a
``partition-id`` or a finite positive ``num-examples`` (at most ``max_examples``), has the wrong number,
shapes or dtypes of arrays, or holds NaN/Inf. Absurd norms are left to the clipping in force (GC/DGC).
Valid replies are sorted by partition id so that aggregation is deterministic.

Identity: once the server knows node id -> partition id (``node_to_pid``, learnt at start from each node's own
configuration: :func:`strategies.sampling.learn_partition_ids`), a reply is also dropped when its sender was not
sent a training message this round, when it repeats a sender already received, or when the ``partition-id`` it
claims differs from its sender's (``spoofed``: without this a malicious client could have its update logged,
scored and attributed as an honest client's).

Failures: an error reply (the ClientApp raised, or the SuperLink answered for a node that stopped sending heartbeats,
with source ``SUPERLINK_NODE_ID`` and the id of the message it answers) is a failure of the node that message was
sent to: logged once in ``failed`` with that node's partition id and the error's own reason, never as a dropped reply.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from flwr.app import Message, MetricRecord

from .base import StrategyWrapper


def check_reply(msg: Message, current: list[np.ndarray], max_examples: int) -> str | None:
    """Return None for a valid reply, else the reason it must be dropped."""
    if msg.has_error():
        return f"client error: {msg.error.reason}"
    content = msg.content
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return "reply must hold exactly one ArrayRecord and one MetricRecord"
    metrics = next(iter(content.metric_records.values()))
    n = metrics.get("num-examples")
    if n is None or isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n <= 0 or n > max_examples:
        return f"bad num-examples {n!r}"
    if "partition-id" not in metrics:
        return "missing partition-id"
    try:
        arrays = next(iter(content.array_records.values())).to_numpy_ndarrays()
    except Exception as exc:  # noqa: BLE001
        return f"unreadable arrays ({exc.__class__.__name__})"
    if len(arrays) != len(current):
        return f"wrong number of arrays ({len(arrays)} != {len(current)})"
    for a, c in zip(arrays, current):
        if a.shape != c.shape:
            return f"wrong shape {a.shape} != {c.shape}"
        if a.dtype != c.dtype:
            return f"wrong dtype {a.dtype} != {c.dtype}"
        if not np.isfinite(a).all():
            return "non-finite values (NaN/Inf)"
    return None


class ReplyValidator(StrategyWrapper):
    def __init__(self, strategy, max_examples: int = 10**7) -> None:
        super().__init__(strategy)
        self.max_examples = max_examples
        self.dropped: list[dict] = []
        self.extra_metrics: dict[int, dict] = {}
        self.failed: list[dict] = []
        self.node_to_pid: dict[int, int] | None = None  # set by the ServerApp; None: no identity check (unit use)
        self.expected: set[int] = set()
        self.sent: list[Message] = []

    def configure_train(self, server_round, arrays, config, grid):
        msgs = list(super().configure_train(server_round, arrays, config, grid))
        self.expected = {int(m.metadata.dst_node_id) for m in msgs}
        self.sent = msgs  # the Grid writes each one's message id into it when it pushes it
        return msgs

    def sender(self, msg: Message) -> int:
        """The node a reply stands for: its source, or for an error reply the node its answered message went to
        (the SuperLink writes a dead node's error reply itself, from ``SUPERLINK_NODE_ID``)."""
        if msg.has_error() and msg.metadata.reply_to_message_id:
            for m in self.sent:
                if m.metadata.message_id == msg.metadata.reply_to_message_id:
                    return int(m.metadata.dst_node_id)
        return int(msg.metadata.src_node_id)

    def partition_of(self, msg: Message) -> int:
        """The sender's own partition when the server knows it, else the one the reply claims (-1: none)."""
        node = self.sender(msg)
        if self.node_to_pid is not None and node in self.node_to_pid:
            return self.node_to_pid[node]
        if not msg.has_error() and len(msg.content.metric_records) == 1:
            return int(next(iter(msg.content.metric_records.values())).get("partition-id", -1))
        return -1

    def identity_problem(self, msg: Message, seen: set[int]) -> str | None:
        """None when the reply comes from a node sent a message this round, once, claiming its own partition."""
        if self.node_to_pid is None:
            return None
        src = self.sender(msg)
        if src not in self.node_to_pid or (self.expected and src not in self.expected):
            return f"node {src} was not sampled this round"
        if src in seen:
            return f"duplicate reply from node {src}"
        if not msg.has_error() and len(msg.content.metric_records) == 1:
            claimed = next(iter(msg.content.metric_records.values())).get("partition-id")
            if claimed is not None and int(claimed) != self.node_to_pid[src]:
                return f"spoofed: claims partition {int(claimed)} but its node is partition {self.node_to_pid[src]}"
        return None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        self.dropped, self.failed = [], []
        self.extra_metrics = {}
        valid = []
        seen: set[int] = set()
        for msg in replies:
            if msg.has_error():
                self.failed.append({"partition-id": self.partition_of(msg), "reason": str(msg.error.reason)})
                continue
            reason = self.identity_problem(msg, seen) or check_reply(msg, self.current_arrays, self.max_examples)
            if self.node_to_pid is not None:
                seen.add(self.sender(msg))
            if reason is None:
                valid.append(msg)
            else:
                self.dropped.append({"partition-id": self.partition_of(msg), "reason": reason,
                                     **({"spoofed": True} if reason.startswith("spoofed") else {})})
        valid.sort(key=lambda m: int(next(iter(m.content.metric_records.values()))["partition-id"]))
        if not valid:
            return None, None
        self._common_metric_keys(valid)
        return self.strategy.aggregate_train(server_round, valid)

    def _common_metric_keys(self, valid: list[Message]) -> None:
        """Flower aggregates MetricRecords only when all share the same keys; a client-specific metric (e.g. the
        attacker's ``attack-norm``) is moved aside into ``extra_metrics[partition id]`` (the round log keeps it)."""
        recs = [next(iter(m.content.metric_records.items())) for m in valid]
        common = set.intersection(*(set(r.keys()) for _k, r in recs))
        for msg, (key, rec) in zip(valid, recs):
            extra = {k: rec[k] for k in rec.keys() if k not in common}
            if extra:
                self.extra_metrics[int(rec["partition-id"])] = extra
                msg.content[key] = MetricRecord({k: rec[k] for k in rec.keys() if k in common})
