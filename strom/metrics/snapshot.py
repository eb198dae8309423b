"""What a scrape reads of the broker, copied on the event loop in one pass of plain tuples.

A scrape has two parts: reading the broker's state, which must happen on the loop that
owns it, and building and encoding the metric families, which costs about ten times more
(some 15 us per series in prometheus_client) and needs nothing but the copy. `take` does
the first, a couple of microseconds per partition; the collectors (collectors.py) do the
second in the endpoint's worker thread, where a large broker's scrape only shares the CPU
with the loop instead of stopping it.

The hot-path stats objects (TopicStats, Latency, the per-API counts) are read by the
thread as they are: each field is one int read, so a series may be a request behind
another, never torn. Every dict and list the loop may resize is copied here.

The broker object is duck-typed: its `replicas`, `cache`, `controller`, `groups`, `logs`,
`loop_lag`, `served` and `listener_names` attributes appear during start-up, and a
snapshot taken before they exist holds what there is.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from strom.metrics.stats import TopicStats


class PartitionRow(NamedTuple):
    topic: str
    index: int
    is_leader: bool
    leader: int
    replicas: int
    isr: int
    preferred: bool  # the leader is the first assigned replica
    min_isr: int
    size: int
    log_start: int
    log_end: int
    segments: int
    high_watermark: int


class GroupRow(NamedTuple):
    group_id: str
    members: int
    state: str
    # (topic, partition, committed offset); -1: assigned to a member, nothing committed
    offsets: list[tuple[str, int, int]]


class TxnRow(NamedTuple):
    """The transaction coordinator's figures (Kafka's TransactionMarkerChannelManager and
    transaction-coordinator-metrics)."""

    states: dict[str, int]  # transactional ids per state, of the partitions led here
    unknown_destination: int  # markers waiting for a partition without a leader
    log_append_retry: int  # markers to be sent again after a failed attempt
    load_time_max_ms: float
    load_time_avg_ms: float


@dataclass(slots=True)
class Snapshot:
    taken: float = 0.0  # monotonic seconds
    idle: float | None = None
    loop_lag: tuple[tuple[float, ...], list[int], float] | None = None  # bounds, counts, sum
    connections: dict[str, int] | None = None
    topic_stats: list[tuple[str, TopicStats]] | None = None
    topic_totals: TopicStats | None = None
    isr_shrinks: int = 0
    isr_expands: int = 0
    partitions: list[PartitionRow] | None = None
    log_dirs: list[str] | None = None
    offline_dirs: list[str] = field(default_factory=list)  # failed (KIP-112)
    offline_replicas: int = 0  # logs in a failed dir
    controller_active: bool | None = None
    unclean_elections: int = 0
    brokers: list[tuple[int, str]] = field(default_factory=list)  # (id, host:port)
    topic_partitions: list[tuple[str, int, int]] = field(default_factory=list)  # name, n, offline
    groups: list[GroupRow] | None = None
    transactions: TxnRow | None = None
    # high watermarks of partitions not hosted here (server/end_offsets.py), for lag
    remote_ends: dict[tuple[str, int], int] = field(default_factory=dict)


def take(broker: Any, remote_ends: dict[tuple[str, int], int] | None = None) -> Snapshot:
    """Copy what the collectors need; on the broker's event loop."""
    s = Snapshot(taken=time.monotonic(), remote_ends=dict(remote_ends or {}))
    loop_lag = getattr(broker, "loop_lag", None)
    if loop_lag is not None:
        s.idle = loop_lag.idle_fraction()
        s.loop_lag = (loop_lag.bounds_ms, list(loop_lag.total_counts), loop_lag.total_ms)
    served = getattr(broker, "served", None)
    if served is not None:
        counts = dict.fromkeys(getattr(broker, "listener_names", ()), 0)
        for listener in served.values():
            counts[listener] = counts.get(listener, 0) + 1
        s.connections = counts
    replicas = getattr(broker, "replicas", None)
    if replicas is not None:
        s.topic_stats = list(replicas.stats.topics.items())
        s.topic_totals = replicas.stats.totals()
        s.isr_shrinks, s.isr_expands = replicas.isr_shrinks, replicas.isr_expands
        s.partitions = [_partition_row(p) for p in replicas.partitions.values()]
    logs = getattr(broker, "logs", None)
    if logs is not None:
        s.log_dirs = list(logs.log_dirs)
        s.offline_dirs = list(logs.offline_dirs)
        s.offline_replicas = sum(1 for plog in logs.logs.values() if plog.offline)
    controller = getattr(broker, "controller", None)
    cache = getattr(broker, "cache", None)
    if controller is not None:
        s.controller_active = bool(controller.active)
        s.unclean_elections = controller.unclean_leader_elections
        if s.controller_active and cache is not None:
            s.brokers = [(i, _address(b)) for i, b in sorted(cache.brokers.items())]
            s.topic_partitions = [
                (name, len(t.partitions), sum(1 for p in t.partitions.values() if p.leader < 0))
                for name, t in sorted(cache.topics.items())]
    groups = getattr(broker, "groups", None)
    if groups is not None:
        s.groups = [GroupRow(g.group_id, len(g.members), getattr(g.state, "name", ""),
                             _group_offsets(g, cache)) for g in groups.registry]
    transactions = getattr(broker, "transactions", None)
    if transactions is not None:
        states: dict[str, int] = {}
        for state in list(transactions.partitions.values()):
            for txn in state.txns.values():
                states[txn.state.name] = states.get(txn.state.name, 0) + 1
        markers = transactions.markers
        loads = transactions.partitions_loaded
        s.transactions = TxnRow(
            states, markers.unknown_destination, markers.log_append_retry,
            transactions.partition_load_time_max_ms,
            transactions.partition_load_time_total_ms / loads if loads else 0.0)
    return s


def _group_offsets(group: Any, cache: Any) -> list[tuple[str, int, int]]:
    """The group's committed offsets, and -1 for each partition assigned to a member with
    nothing committed (kafka_exporter reports those with lag -1, to alert on)."""
    out = [(t, i, o.offset) for (t, i), o in group.offsets.items()]
    committed = set(group.offsets)
    for tp in _assigned(group, cache):
        if tp not in committed:
            committed.add(tp)
            out.append((tp[0], tp[1], -1))
    return out


def _assigned(group: Any, cache: Any) -> list[tuple[str, int]]:
    """The partitions assigned to the group's members: the new protocol's (by topic id),
    or a classic consumer group's, decoded from the leader's assignments."""
    out: list[tuple[str, int]] = []
    for member in list(group.members.values()):
        assigned = getattr(member, "assigned", None)
        if assigned is not None:  # KIP-848 member
            for topic_id, partitions in assigned.items():
                info = cache.topic_by_id(topic_id) if cache is not None else None
                if info is not None:
                    out += [(info.name, p) for p in partitions]
        elif getattr(group, "protocol_type", None) == "consumer":
            out += _decode_assignment(getattr(member, "assignment", b""))
    return out


_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def _decode_assignment(data: bytes) -> list[tuple[str, int]]:
    """The topic partitions of a consumer protocol Assignment (any version: they share
    this prefix); [] for anything that does not parse."""
    try:
        pos = 2  # version
        (topics,) = _I32.unpack_from(data, pos)
        pos += 4
        out = []
        for _ in range(max(topics, 0)):
            (n,) = _I16.unpack_from(data, pos)
            topic = bytes(data[pos + 2:pos + 2 + n]).decode()
            pos += 2 + n
            (count,) = _I32.unpack_from(data, pos)
            pos += 4
            for _ in range(max(count, 0)):
                out.append((topic, _I32.unpack_from(data, pos)[0]))
                pos += 4
        return out
    except (struct.error, UnicodeDecodeError):
        return []


def _partition_row(p: Any) -> PartitionRow:
    plog = p.log
    return PartitionRow(p.topic, p.index, p.is_leader, p.leader, len(p.replicas), len(p.isr),
                        bool(p.replicas) and p.replicas[0] == p.leader,
                        plog.config.get("min.insync.replicas"), plog.size_in_bytes,
                        plog.log_start_offset, plog.log_end_offset, len(plog.segments),
                        p.high_watermark)


def _address(broker: Any) -> str:
    endpoints = broker.endpoints
    return f"{endpoints[0].host}:{endpoints[0].port}" if endpoints else ""
