"""GroupCoordinator: Kafka's classic group protocol and committed offsets.

A group belongs to partition `abs(javaHash(group_id)) % offsets.topic.num.partitions` of
`__consumer_offsets`; the leader of that partition is its coordinator. Every change to a
group (its generation and members after a rebalance) and every committed offset is written
to that partition (see offsets_format.py) before it is acknowledged, and replayed when the
partition is loaded (on start-up, or when this broker becomes its leader). Until a
partition is loaded its groups get COORDINATOR_LOAD_IN_PROGRESS.

The classic rebalance protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) is in
classic_protocol.py, a mixin of this class; the consumer protocol (KIP-848) in
consumer_coordinator.py. Both find their groups in the GroupRegistry (group_registry.py),
which this class fills as partitions load and empties as they unload. This module keeps
the rest of what both share: persistence, offsets, admin requests and timers.

Owned by the event loop: the state of every group is changed only by these methods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from strom.clock import Clock
from strom.cluster.controller import Controller, NewTopic
from strom.cluster.metadata_cache import MetadataCache
from strom.config import BrokerConfig
from strom.coordinator import group_store
from strom.coordinator import offsets_format as fmt
from strom.coordinator.classic_protocol import ClassicProtocol
from strom.coordinator.consumer_coordinator import ConsumerCoordinator
from strom.coordinator.consumer_group import ConsumerGroup
from strom.coordinator.group import ClassicGroup, CommittedOffset, GroupState
from strom.coordinator.group_registry import GroupRegistry
from strom.coordinator.group_results import (
    FetchedOffset,
    GroupDescription,
    GroupOverview,
    JoinResult,
    MemberDescription,
    OffsetCommitRequest,
    SyncResult,
)
from strom.coordinator.internal_topic import InternalTopic, java_string_hash
from strom.coordinator.txn_offsets import PendingTxnOffsets
from strom.log.records import NewRecord, build_batch
from strom.protocol.errors import ErrorCode, KafkaError, kafka_error
from strom.replication.replica_manager import ReplicaManager
from strom.tasks import essential, run_forever, run_until_done, spawn

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
SWEEP_INTERVAL_S = 0.2


class GroupCoordinator(ClassicProtocol):
    def __init__(self, broker_id: int, config: BrokerConfig, clock: Clock,
                 cache: MetadataCache, controller: Controller,
                 replicas: ReplicaManager) -> None:
        self.broker_id = broker_id
        self.config = config
        self.clock = clock
        self.cache = cache
        self.controller = controller
        self.replicas = replicas
        self.registry = GroupRegistry(
            self.partition_for, lambda: cache.topic(OFFSETS_TOPIC) is not None)
        self._sweeper: asyncio.Task | None = None
        self._loaders: set[asyncio.Task] = set()
        # the KIP-848 protocol, on the same groups
        self.consumer = ConsumerCoordinator(self.registry, config, clock, cache)
        self.topic = InternalTopic(
            OFFSETS_TOPIC, cache, controller, config.get("offsets.topic.num.partitions"),
            lambda live: NewTopic(
                OFFSETS_TOPIC, config.get("offsets.topic.num.partitions"),
                min(config.get("offsets.topic.replication.factor"), live), None,
                {"cleanup.policy": "compact", "compression.type": "producer",
                 "segment.bytes": str(config.get("offsets.topic.segment.bytes"))}))
        self._last_expiry = 0.0
        # TxnOffsetCommit's offsets until their transaction's marker
        self.pending_txn = PendingTxnOffsets()
        cache.on_change(self._on_topics_changed)
        replicas.add_txn_marker_listener(self._on_txn_marker)

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._on_topics_changed({OFFSETS_TOPIC})
        self._sweeper = essential(spawn(
            run_forever(self._sweep, "Group sweeper", SWEEP_INTERVAL_S), "group-sweeper"))

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._loaders):
            task.cancel()
        for group in self.registry:
            if isinstance(group, ConsumerGroup):
                continue  # its members wait on nothing
            for m in group.members.values():
                for fut in (m.join_future, m.sync_future):
                    if fut is not None and not fut.done():
                        fut.cancel()

    @property
    def num_partitions(self) -> int:
        return self.topic.num_partitions

    def partition_for(self, group_id: str) -> int:
        return self.topic.partition_for(group_id)

    async def find_coordinator(self, group_id: str) -> int:
        """The broker id coordinating `group_id`; creates __consumer_offsets on first use.

        Raises COORDINATOR_NOT_AVAILABLE while the topic has no leader for the partition.
        """
        return await self.topic.find_coordinator(group_id)

    # --- partition loading -------------------------------------------------------------
    def _on_topics_changed(self, topics: set[str]) -> None:
        if OFFSETS_TOPIC not in topics:
            return
        info = self.cache.topic(OFFSETS_TOPIC)
        # led partition -> its leader epoch: a partition led again at a newer epoch (its
        # leadership went elsewhere and came back between two looks) is loaded again, as
        # the other leader may have written to it meanwhile
        led: dict[int, int] = {}
        if info is not None:
            for p, pinfo in info.partitions.items():
                replica = self.replicas.partitions.get((OFFSETS_TOPIC, p))
                if pinfo.leader == self.broker_id and replica is not None:
                    led[p] = replica.leader_epoch
        for p, state in list(self.registry.partitions.items()):
            if led.get(p) != state.coordinator_epoch:
                self._unload(p)
        for p in sorted(set(led) - set(self.registry.partitions)):
            self.registry.add_partition(p, led[p])
            spawn(run_until_done(lambda p=p: self._load(p),
                                 f"Loading groups of {OFFSETS_TOPIC}-{p}"),
                  f"group-loader-{p}", self._loaders)

    def _unload(self, p: int) -> None:
        groups = self.registry.remove_partition(p)
        self.pending_txn.drop_partition(p)
        for group in groups:
            self._fail_waiters(group, ErrorCode.not_coordinator)
        log.info("Unloaded %d groups of %s-%d", len(groups), OFFSETS_TOPIC, p)

    async def _load(self, p: int) -> None:
        partition = self.replicas.partitions.get((OFFSETS_TOPIC, p))
        state = self.registry.partitions.get(p)
        if partition is None or state is None:
            return
        replayed = await group_store.replay(partition.log, f"{OFFSETS_TOPIC}-{p}")
        offsets, groups = replayed.offsets, replayed.groups
        now = self.clock.monotonic()
        restored = [group for group_id in set(offsets) | set(groups)
                    if (group := group_store.restore(group_id, groups.get(group_id),
                                                     offsets.get(group_id, {}), now))]
        if not self.registry.loaded(p, state, restored):
            return  # unloaded while loading
        self.pending_txn.load(p, replayed.pending)
        log.info("Loaded %d groups from %s-%d", len(restored), OFFSETS_TOPIC, p)

    def check_coordinator(self, group_id: str) -> None:
        """See GroupRegistry.check_coordinator."""
        self.registry.check_coordinator(group_id)

    # --- persistence ------------------------------------------------------------------
    async def _write(self, group_id: str, records: list[tuple[bytes, bytes | None]],
                     producer: tuple[int, int] | None = None) -> None:
        """Append records (as a transactional batch of `producer`: (id, epoch), when given)
        and wait for the ISR."""
        if not records:
            return
        now = self.clock.now_ms()
        txn = {} if producer is None else {
            "producer_id": producer[0], "producer_epoch": producer[1],
            "is_transactional": True}
        batch = build_batch([NewRecord(key=k, value=v, timestamp=now) for k, v in records],
                            **txn)
        partition = self.partition_for(group_id)
        try:
            # as Kafka: acks=all, answered when the ISR has it (offsets.commit.timeout.ms)
            await self.topic.append(self.replicas, partition, batch,
                                    self.config.get("offsets.commit.timeout.ms"))
        except KafkaError as e:
            log.warning("Could not write group %s to %s: %s", group_id, OFFSETS_TOPIC, e)
            if e.code in (ErrorCode.not_leader_or_follower,
                          ErrorCode.unknown_topic_or_partition):
                raise kafka_error(ErrorCode.not_coordinator) from None
            raise kafka_error(ErrorCode.coordinator_not_available) from None

    async def _store_group(self, group: ClassicGroup) -> None:
        await self._write(group.group_id, [group_store.group_record(group)])

    # --- offsets ----------------------------------------------------------------------
    async def commit_offsets(self, group_id: str, generation_id: int, member_id: str,
                             instance_id: str | None, offsets: list[OffsetCommitRequest]
                             ) -> list[tuple[str, int, ErrorCode]]:
        self.registry.check_coordinator(group_id)
        group = self.registry.get(group_id)
        if isinstance(group, ConsumerGroup):
            self.consumer.validate_commit(group, member_id, generation_id)
        elif generation_id < 0 and not member_id and instance_id is None:
            if group is not None and group.members:
                raise kafka_error(ErrorCode.unknown_member_id)
            group = self._get_or_create(group_id)
        else:
            if group is None:
                raise kafka_error(ErrorCode.illegal_generation)
            self._validate_member(group, member_id, instance_id)
            if generation_id != group.generation_id:
                raise kafka_error(ErrorCode.illegal_generation)
            if group.in_state(GroupState.COMPLETING_REBALANCE):
                raise kafka_error(ErrorCode.rebalance_in_progress)
            member = group.members[member_id]
            member.heartbeat_deadline = self.clock.monotonic() + \
                member.session_timeout_ms / 1000
        now = self.clock.now_ms()
        results, records, accepted = self._offset_records(group_id, offsets, now)
        if records:
            await self._write(group_id, records)
            for o in accepted:
                group.offsets[(o.topic, o.partition)] = CommittedOffset(
                    o.offset, o.leader_epoch, o.metadata or "", now)
        return results

    def _offset_records(self, group_id: str, offsets: list[OffsetCommitRequest], now: int):
        """(per-partition results, records to write, accepted requests)."""
        max_metadata = self.config.get("offset.metadata.max.bytes")
        results = []
        records = []
        accepted = []
        for o in offsets:
            code = ErrorCode.none
            if o.metadata is not None and len(o.metadata.encode()) > max_metadata:
                code = ErrorCode.offset_metadata_too_large
            elif self.cache.partition(o.topic, o.partition) is None:
                code = ErrorCode.unknown_topic_or_partition
            if code == ErrorCode.none:
                value = fmt.OffsetValue(o.offset, o.leader_epoch, o.metadata or "", now)
                records.append((fmt.offset_key(group_id, o.topic, o.partition),
                                fmt.offset_value(value)))
                accepted.append(o)
            results.append((o.topic, o.partition, code))
        return results, records, accepted

    async def txn_commit_offsets(self, group_id: str, producer_id: int, producer_epoch: int,
                                 generation_id: int, member_id: str, instance_id: str | None,
                                 offsets: list[OffsetCommitRequest]
                                 ) -> list[tuple[str, int, ErrorCode]]:
        """TxnOffsetCommit: the offsets are written as the producer's transactional batch
        and stay pending (pending_txn) until its transaction's marker."""
        self.registry.check_coordinator(group_id)
        group = self.registry.get(group_id)
        if generation_id >= 0 or member_id or instance_id is not None:
            # a member's commit (KIP-447): it must still belong to the generation
            if isinstance(group, ConsumerGroup):
                self.consumer.validate_commit(group, member_id, generation_id)
            elif group is None:
                raise kafka_error(ErrorCode.illegal_generation)
            else:
                self._validate_member(group, member_id, instance_id)
                if generation_id != group.generation_id:
                    raise kafka_error(ErrorCode.illegal_generation)
        elif group is None:
            self._get_or_create(group_id)
        now = self.clock.now_ms()
        results, records, accepted = self._offset_records(group_id, offsets, now)
        if records:
            await self._write(group_id, records, (producer_id, producer_epoch))
            self.pending_txn.add(self.partition_for(group_id), producer_id, group_id, {
                (o.topic, o.partition): CommittedOffset(o.offset, o.leader_epoch,
                                                        o.metadata or "", now)
                for o in accepted})
        return results

    def _on_txn_marker(self, topic: str, partition: int, producer_id: int,
                       commit: bool) -> None:
        """A marker was appended on this broker: its transactional offsets count (COMMIT)
        or are dropped (ABORT)."""
        if topic != OFFSETS_TOPIC:
            return
        for group_id, offsets in self.pending_txn.end(partition, producer_id).items():
            group = self.registry.get(group_id)
            if commit and group is not None:
                group.offsets.update(offsets)

    def fetch_offsets(self, group_id: str, partitions: list[tuple[str, int]] | None,
                      require_stable: bool = False) -> list[FetchedOffset]:
        """Committed offsets; with `require_stable`, UNSTABLE_OFFSET_COMMIT for partitions
        whose offsets wait for a transaction's marker."""
        self.registry.check_coordinator(group_id)
        group = self.registry.get(group_id)
        committed = group.offsets if group is not None else {}
        p_offsets = self.partition_for(group_id)
        if require_stable and self.pending_txn.has_pending(p_offsets, group_id):
            if partitions is None:
                partitions = sorted(committed)
            return [FetchedOffset(t, p, -1, -1, "", ErrorCode.unstable_offset_commit)
                    if self.pending_txn.is_pending(p_offsets, group_id, (t, p)) else
                    self._fetched(committed, t, p) for t, p in partitions]
        if partitions is None:
            return [FetchedOffset(t, p, c.offset, c.leader_epoch, c.metadata)
                    for (t, p), c in sorted(committed.items())]
        return [self._fetched(committed, t, p) for t, p in partitions]

    @staticmethod
    def _fetched(committed, t: str, p: int) -> FetchedOffset:
        c = committed.get((t, p))
        if c is None:
            return FetchedOffset(t, p, -1, -1, "")
        return FetchedOffset(t, p, c.offset, c.leader_epoch, c.metadata)

    async def delete_offsets(self, group_id: str, partitions: list[tuple[str, int]]
                             ) -> list[tuple[str, int, ErrorCode]]:
        self.registry.check_coordinator(group_id)
        group = self.registry.get(group_id)
        if group is None or (isinstance(group, ClassicGroup) and
                             group.in_state(GroupState.DEAD)):
            raise kafka_error(ErrorCode.group_id_not_found)
        if isinstance(group, ConsumerGroup):
            subscribed = {t for m in group.members.values() for t in m.subscribed_topic_names}
        else:
            subscribed = group.subscribed_topics() if group.members else set()
        if group.members and subscribed is None:
            raise kafka_error(ErrorCode.non_empty_group)
        results, records = [], []
        for t, p in partitions:
            if subscribed and t in subscribed:
                results.append((t, p, ErrorCode.group_subscribed_to_topic))
                continue
            if self.cache.partition(t, p) is None:
                results.append((t, p, ErrorCode.unknown_topic_or_partition))
                continue
            if (t, p) in group.offsets:
                records.append((fmt.offset_key(group_id, t, p), None))
            results.append((t, p, ErrorCode.none))
        await self._write(group_id, records)
        for t, p, code in results:
            if code == ErrorCode.none:
                group.offsets.pop((t, p), None)
        return results

    # --- admin ------------------------------------------------------------------------
    def list_groups(self, states: Iterable[str] = (), types: Iterable[str] = ()
                    ) -> list[GroupOverview]:
        states = {s.lower() for s in states}
        types = {t.lower() for t in types}
        out = []
        for pstate in self.registry.partitions.values():
            if pstate.loading:
                raise kafka_error(ErrorCode.coordinator_load_in_progress)
            for gid in sorted(pstate.groups):
                g = self.registry.get(gid)
                if isinstance(g, ConsumerGroup):
                    if (states and g.state.lower() not in states) or \
                            (types and "consumer" not in types):
                        continue
                    out.append(GroupOverview(gid, "consumer", g.state, "consumer"))
                    continue
                if g is None or g.in_state(GroupState.DEAD):
                    continue
                if states and g.state.value.lower() not in states:
                    continue
                if types and "classic" not in types:
                    continue
                out.append(GroupOverview(gid, g.protocol_type or "", g.state.value))
        return sorted(out, key=lambda g: g.group_id)

    def describe_group(self, group_id: str) -> GroupDescription:
        try:
            self.registry.check_coordinator(group_id)
        except KafkaError as e:
            return GroupDescription(group_id, "", "", "", (), e.code)
        g = self.registry.get(group_id)
        if isinstance(g, ConsumerGroup):
            return GroupDescription(group_id, "", "", "", (), ErrorCode.group_id_not_found)
        if g is None or g.in_state(GroupState.DEAD):
            return GroupDescription(group_id, GroupState.DEAD.value, "", "")
        stable = g.in_state(GroupState.STABLE)  # as Kafka: metadata only when Stable
        members = tuple(MemberDescription(
            m.member_id, m.group_instance_id, m.client_id, m.client_host,
            m.metadata(g.protocol_name or "") if stable else b"",
            m.assignment if stable else b"") for m in g.members.values())
        return GroupDescription(group_id, g.state.value, g.protocol_type or "",
                                g.protocol_name or "" if stable else "", members)

    async def delete_group(self, group_id: str) -> ErrorCode:
        try:
            self.registry.check_coordinator(group_id)
        except KafkaError as e:
            return e.code
        g = self.registry.get(group_id)
        if isinstance(g, ConsumerGroup):
            if g.members:
                return ErrorCode.non_empty_group
            g = ClassicGroup(group_id, offsets=g.offsets)  # deleted below like any other
        if g is None or g.in_state(GroupState.DEAD):
            return ErrorCode.group_id_not_found
        if g.members or not g.in_state(GroupState.EMPTY):
            return ErrorCode.non_empty_group
        records = [(fmt.offset_key(group_id, t, p), None) for (t, p) in g.offsets]
        records.append((fmt.group_key(group_id), None))
        await self._write(group_id, records)
        g.transition(GroupState.DEAD)
        self.registry.remove(group_id)
        log.info("Deleted group %s", group_id)
        return ErrorCode.none

    # --- timers -----------------------------------------------------------------------
    async def _sweep(self) -> None:
        """One pass of the sweeper (every SWEEP_INTERVAL_S, under `run_forever`)."""
        self._expire_members()
        now = self.clock.monotonic()
        interval = self.config.get("offsets.retention.check.interval.ms") / 1000
        if now - self._last_expiry >= interval:
            self._last_expiry = now
            await self._expire_offsets()

    def _expire_members(self) -> None:
        now = self.clock.monotonic()
        for group in self.registry:
            if isinstance(group, ConsumerGroup):
                self.consumer.expire(group)
                continue
            for pid, deadline in list(group.pending_members.items()):
                if deadline <= now:
                    del group.pending_members[pid]
                    self._maybe_complete_join(group)
            for m in list(group.members.values()):
                if m.awaiting_join or m.heartbeat_deadline > now:
                    continue
                if group.members.get(m.member_id) is m:
                    self._member_gone(group, m, "its session timed out")

    async def _expire_offsets(self) -> None:
        retention_ms = self.config.get("offsets.retention.minutes") * 60_000
        now = self.clock.now_ms()
        for group in self.registry:
            empty = not group.members if isinstance(group, ConsumerGroup) else \
                group.in_state(GroupState.EMPTY)
            if not empty or not group.offsets:
                continue
            expired = [tp for tp, c in group.offsets.items()
                       if now - max(c.commit_timestamp, group.state_timestamp) > retention_ms]
            if not expired:
                continue
            try:
                await self._write(group.group_id, [(fmt.offset_key(group.group_id, t, p), None)
                                                   for t, p in expired])
            except KafkaError:
                continue
            for tp in expired:
                group.offsets.pop(tp, None)
            log.info("Expired %d offsets of empty group %s", len(expired), group.group_id)

    def _fail_waiters(self, group: ClassicGroup | ConsumerGroup, code: ErrorCode) -> None:
        if isinstance(group, ConsumerGroup):
            return
        for m in group.members.values():
            if m.awaiting_join:
                m.join_future.set_result(JoinResult(code, m.member_id))
            if m.awaiting_sync:
                m.sync_future.set_result(SyncResult(code))

    def _spawn(self, coro) -> asyncio.Task:
        return spawn(coro, f"group-coordinator-{coro.__qualname__}")


__all__ = ["GroupCoordinator", "OFFSETS_TOPIC", "java_string_hash"]
