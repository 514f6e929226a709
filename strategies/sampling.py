"""Reproducible client sampling for any Flower strategy, and the node id -> partition id map it samples by.

``SampledParticipation`` replaces the sampling step of the strategy it wraps (FedAvg and its subclasses:
FedMedian, FedTrimmedAvg, MultiKrum): round r sends the global model to the nodes of the partition ids drawn by
:func:`fl_mdisc.sampling.participants` (a pure function of seed, round, N, K), with the same message content
FedAvg builds (``arrays``, ``config`` with ``server-round``). Aggregation is the wrapped strategy's, unchanged.
Flower's own ``sample_nodes`` is not reproducible (random node ids, module-global ``random`` shared with a
heartbeat thread): see :mod:`fl_mdisc.sampling`.

A drawn partition whose node the SuperLink does not list as online at the start of the round (its heartbeat
expired: dead, hung or disconnected; ``grid.get_node_ids()``) is not sent a message that round and is logged as
``unavailable``; it is drawn again as soon as the SuperLink lists its node again. The draw itself never depends on
who is online, so the other partitions' participation stays the seed's (in the simulation every node is always
online, and nothing changes).

On the Deployment Engine the launcher registers one key per partition and hands the ServerApp the map
(:func:`registered_partition_ids`); otherwise ``learn_partition_ids`` asks every node once, at start, for its partition id (the ClientApp's ``query`` answers
with ``context.node_config["partition-id"]``, the node's own configuration), and checks that the answers are
exactly 0..N-1, each once. The ReplyValidator then binds every train reply to the partition of its sender.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fl_mdisc.errors import ConfigError

from .base import StrategyWrapper

PULL_INTERVAL_S = 0.1
"""Seconds between two pulls for replies (the simulation's own in-memory grid uses the same; Flower's
deployment grid sleeps 3 s between pulls, which made every deployment round wait up to 3 s more)."""


def send_and_receive(grid: Grid, messages: Iterable[Message], timeout: float | None) -> list[Message]:
    """``Grid.send_and_receive`` with a 0.1 s pull interval on every grid: push, then pull the replies until all
    arrived or ``timeout`` seconds passed (replies in arrival order, as Flower's)."""
    pending = set(grid.push_messages(messages))
    end = time.time() + (timeout if timeout is not None else 0.0)
    replies: list[Message] = []
    while pending and (timeout is None or time.time() < end):
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(m.metadata.reply_to_message_id for m in got)
        if pending:
            time.sleep(PULL_INTERVAL_S)
    return replies


def learn_partition_ids(grid: Grid, node_ids: list[int], n: int, timeout: float = 120.0,
                        chunk: int = 50) -> dict[int, int]:
    """node id -> partition id, from one ``query`` message per node; one clear error if the federation is wrong.

    Sent in chunks of ``chunk`` nodes: the simulation's dispatcher scans every stored message for every node each
    0.1 s (O(nodes x pending messages), ../shared/notes/flower-1.42-scaleout.md 3.3), so 1,000 queries at once
    would stall it."""
    t0 = time.time()
    replies = []
    for i in range(0, len(node_ids), chunk):
        msgs = [Message(RecordDict({"config": ConfigRecord({"ask": "partition-id"})}), dst_node_id=nid,
                        message_type=MessageType.QUERY) for nid in node_ids[i: i + chunk]]
        replies += send_and_receive(grid, msgs, timeout)
    mapping: dict[int, int] = {}
    bad = []
    for r in replies:
        if r.has_error() or len(r.content.metric_records) != 1:
            bad.append(f"node {r.metadata.src_node_id}: {r.error.reason if r.has_error() else 'no metrics'}")
            continue
        met = next(iter(r.content.metric_records.values()))
        mapping[int(r.metadata.src_node_id)] = int(met.get("partition-id", -1))
    pids = sorted(mapping.values())
    if bad or len(mapping) != len(node_ids) or pids != list(range(n)):
        raise ConfigError(f"the SuperNodes' partition ids are not exactly 0..{n - 1} once each (got {len(mapping)} "
                          f"answers of {len(node_ids)} nodes in {time.time() - t0:.0f}s{'; ' + '; '.join(bad[:3]) if bad else ''}); "
                          f"start node i with --node-config \"partition-id=i num-partitions={n}\"")
    return mapping


NODE_MAP_ENV = "FL_MDISC_NODE_MAP"  # set by the Deployment Engine launcher for the ServerApp (app/launch.py)


def registered_partition_ids(path: str, node_ids: list[int], n: int) -> dict[int, int]:
    """node id -> partition id as the launcher wrote it when it registered each SuperNode's public key with the
    SuperLink (``flwr supernode register``: the SuperLink gives the key its node id, and only registered keys may
    connect). The server trusts this, not what a node's own configuration says about itself."""
    import json
    from pathlib import Path

    mapping = {int(k): int(v) for k, v in json.loads(Path(path).read_text()).items()}
    unknown = sorted(set(node_ids) - set(mapping))
    if sorted(mapping.values()) != list(range(n)) or unknown:
        raise ConfigError(f"the registered node map {path} does not cover partitions 0..{n - 1} once each, or online "
                          f"nodes {unknown[:3]} are not in it; register one key per partition")
    return mapping


class SampledParticipation(StrategyWrapper):
    """Send round r's training messages to the partitions ``draw(r, phase)`` returns; aggregate as the inner
    strategy does."""

    def __init__(self, strategy, draw: Callable[[int, str], tuple[int, ...]]) -> None:
        super().__init__(strategy)
        self.draw = draw
        self.node_of: dict[int, int] = {}  # partition id -> node id
        self.sampled: tuple[int, ...] = ()
        self.unavailable: tuple[int, ...] = ()  # drawn this round, but their node was not online: not sent
        self.phase = "accumulate"

    def set_nodes(self, node_to_pid: dict[int, int]) -> None:
        self.node_of = {pid: nid for nid, pid in node_to_pid.items()}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.current_arrays = arrays.to_numpy_ndarrays()
        if not self.node_of:
            raise RuntimeError("SampledParticipation needs set_nodes() (node id -> partition id) before round 1")
        phase = str(config["phase"]) if "phase" in config else "accumulate"
        drawn = tuple(self.draw(server_round, phase))
        online = set(grid.get_node_ids())  # the SuperLink's ONLINE nodes: a heartbeat within its patience
        self.unavailable = tuple(pid for pid in drawn if self.node_of[pid] not in online)
        self.sampled = tuple(pid for pid in drawn if pid not in self.unavailable)
        config["server-round"] = server_round
        record = RecordDict({"arrays": arrays, "config": config})
        return [Message(content=record, message_type=MessageType.TRAIN, dst_node_id=self.node_of[pid])
                for pid in self.sampled]
