"""GroupCoordinator: Kafka's classic group protocol and committed offsets.

A group belongs to partition `abs(javaHash(group_id)) % offsets.topic.num.partitions` of
`__consumer_offsets`; the leader of that partition is its coordinator. Every change to a
group (its generation and members after a rebalance) and every committed offset is written
to that partition (see offsets_format.py) before it is acknowledged, and replayed when the
partition is loaded (on start-up, or when this broker becomes its leader). Until a
partition is loaded its groups get COORDINATOR_LOAD_IN_PROGRESS.

Rebalance protocol (eager and cooperative look the same to the broker):
  JoinGroup     a new member first gets MEMBER_ID_REQUIRED with its id (v4+), then joins;
                the group waits (PreparingRebalance) until every known member has rejoined
                or the rebalance timeout passes; an Empty group first waits
                group.initial.rebalance.delay.ms for more members. Then a new generation:
                the leader gets every member's metadata.
  SyncGroup     the leader's assignments are stored (and written), then every member gets
                its own (CompletingRebalance -> Stable).
  Heartbeat     keeps a member alive for session.timeout.ms and tells it about a rebalance.
  LeaveGroup    removes members at once (a rebalance follows).

Owned by the event loop: the state of every group is changed only by these methods.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from strom.clock import Clock
from strom.cluster.controller import Controller, NewTopic
from strom.cluster.metadata_cache import MetadataCache
from strom.config import BrokerConfig
from strom.coordinator import group_store
from strom.coordinator import offsets_format as fmt
from strom.coordinator.consumer_coordinator import ConsumerCoordinator
from strom.coordinator.consumer_group import ConsumerGroup
from strom.coordinator.group import ClassicGroup, CommittedOffset, GroupState, Member
from strom.coordinator.group_results import (
    FetchedOffset,
    GroupDescription,
    GroupOverview,
    JoinResult,
    MemberDescription,
    OffsetCommitRequest,
    SyncResult,
)
from strom.log.records import NewRecord, build_batch
from strom.protocol.errors import ErrorCode, KafkaError
from strom.replication.replica_manager import ReplicaManager

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
SWEEP_INTERVAL_S = 0.2


def java_string_hash(s: str) -> int:
    """Java's String.hashCode over UTF-16 code units, as a signed 32-bit int."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def _error(code: ErrorCode, message: str | None = None) -> KafkaError:
    return KafkaError(message, code)


def _fenced(instance_id: str) -> KafkaError:
    return _error(ErrorCode.fenced_instance_id,
                  f"Static member {instance_id} was replaced by a newer instance.")


@dataclass(slots=True)
class _PartitionState:
    loading: bool = True
    groups: set[str] = field(default_factory=set)


class GroupCoordinator:
    def __init__(self, broker_id: int, config: BrokerConfig, clock: Clock,
                 cache: MetadataCache, controller: Controller,
                 replicas: ReplicaManager) -> None:
        self.broker_id = broker_id
        self.config = config
        self.clock = clock
        self.cache = cache
        self.controller = controller
        self.replicas = replicas
        self.groups: dict[str, ClassicGroup] = {}
        self.partitions: dict[int, _PartitionState] = {}
        self._sweeper: asyncio.Task | None = None
        self._loaders: set[asyncio.Task] = set()
        self.consumer = ConsumerCoordinator(self)  # the KIP-848 protocol, same groups
        self._creating_topic: asyncio.Task | None = None
        self._last_expiry = 0.0
        cache.on_change(self._on_topics_changed)

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._on_topics_changed({OFFSETS_TOPIC})
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        self._sweeper.add_done_callback(_log_task_failure)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._loaders):
            task.cancel()
        for group in self.groups.values():
            if isinstance(group, ConsumerGroup):
                continue  # its members wait on nothing
            for m in group.members.values():
                for fut in (m.join_future, m.sync_future):
                    if fut is not None and not fut.done():
                        fut.cancel()

    @property
    def num_partitions(self) -> int:
        info = self.cache.topic(OFFSETS_TOPIC)
        if info is not None:
            return len(info.partitions)
        return self.config.get("offsets.topic.num.partitions")

    def partition_for(self, group_id: str) -> int:
        return (java_string_hash(group_id) & 0x7FFFFFFF) % self.num_partitions

    # --- finding the coordinator -------------------------------------------------------
    async def find_coordinator(self, group_id: str) -> int:
        """The broker id coordinating `group_id`; creates __consumer_offsets on first use.

        Raises COORDINATOR_NOT_AVAILABLE while the topic has no leader for the partition.
        """
        if self.cache.topic(OFFSETS_TOPIC) is None:
            await self._create_offsets_topic()
        info = self.cache.partition(OFFSETS_TOPIC, self.partition_for(group_id))
        if info is None or info.leader < 0 or info.leader not in self.cache.brokers:
            raise _error(ErrorCode.coordinator_not_available,
                         "The coordinator is not available.")
        return info.leader

    async def _create_offsets_topic(self) -> None:
        if self._creating_topic is None or self._creating_topic.done():
            self._creating_topic = asyncio.get_running_loop().create_task(
                self._do_create_offsets_topic())
        await asyncio.shield(self._creating_topic)

    async def _do_create_offsets_topic(self) -> None:
        if not self.controller.active:
            raise _error(ErrorCode.coordinator_not_available)
        rf = min(self.config.get("offsets.topic.replication.factor"),
                 max(1, len(self.cache.brokers)))
        try:
            await self.controller.create_topic(NewTopic(
                OFFSETS_TOPIC, self.config.get("offsets.topic.num.partitions"), rf, None,
                {"cleanup.policy": "compact", "compression.type": "producer",
                 "segment.bytes": str(self.config.get("offsets.topic.segment.bytes"))}),
                internal=True)
        except KafkaError as e:
            if e.code != ErrorCode.topic_already_exists:
                raise
        await self.cache.refresh_now({OFFSETS_TOPIC})

    # --- partition loading -------------------------------------------------------------
    def _on_topics_changed(self, topics: set[str]) -> None:
        if OFFSETS_TOPIC not in topics:
            return
        info = self.cache.topic(OFFSETS_TOPIC)
        led = set()
        if info is not None:
            for p, pinfo in info.partitions.items():
                if pinfo.leader == self.broker_id and (OFFSETS_TOPIC, p) in \
                        self.replicas.partitions:
                    led.add(p)
        for p in list(self.partitions):
            if p not in led:
                self._unload(p)
        for p in sorted(led - set(self.partitions)):
            self.partitions[p] = _PartitionState()
            task = asyncio.get_running_loop().create_task(self._load(p))
            self._loaders.add(task)
            task.add_done_callback(self._loaders.discard)
            task.add_done_callback(_log_task_failure)

    def _unload(self, p: int) -> None:
        state = self.partitions.pop(p)
        for group_id in state.groups:
            group = self.groups.pop(group_id, None)
            if group is not None:
                self._fail_waiters(group, ErrorCode.not_coordinator)
        log.info("Unloaded %d groups of %s-%d", len(state.groups), OFFSETS_TOPIC, p)

    async def _load(self, p: int) -> None:
        partition = self.replicas.partitions.get((OFFSETS_TOPIC, p))
        state = self.partitions.get(p)
        if partition is None or state is None:
            return
        offsets, groups = await group_store.replay(partition.log, f"{OFFSETS_TOPIC}-{p}")
        if self.partitions.get(p) is not state:
            return  # unloaded while loading
        now = self.clock.monotonic()
        for group_id in set(offsets) | set(groups):
            group = group_store.restore(group_id, groups.get(group_id),
                                        offsets.get(group_id, {}), now)
            if group is not None:
                self.groups[group_id] = group
                state.groups.add(group_id)
        state.loading = False
        log.info("Loaded %d groups from %s-%d", len(state.groups), OFFSETS_TOPIC, p)

    def _check_coordinator(self, group_id: str) -> None:
        if not group_id:
            raise _error(ErrorCode.invalid_group_id, "The group id must not be empty.")
        if self.cache.topic(OFFSETS_TOPIC) is None:
            raise _error(ErrorCode.coordinator_not_available)
        p = self.partition_for(group_id)
        state = self.partitions.get(p)
        if state is None:
            raise _error(ErrorCode.not_coordinator,
                         f"This broker is not the coordinator of group {group_id}.")
        if state.loading:
            raise _error(ErrorCode.coordinator_load_in_progress)

    check_coordinator = _check_coordinator

    def register_group(self, group: ClassicGroup | ConsumerGroup) -> None:
        self.groups[group.group_id] = group
        self.partitions[self.partition_for(group.group_id)].groups.add(group.group_id)

    def _classic(self, group_id: str, convert: bool = False) -> ClassicGroup | None:
        """The classic group `group_id`, or None. A consumer-protocol group with members
        refuses classic requests; an empty one is converted when `convert` (its offsets
        are kept)."""
        group = self.groups.get(group_id)
        if not isinstance(group, ConsumerGroup):
            return group
        if group.members or not convert:
            raise _error(ErrorCode.inconsistent_group_protocol if convert
                         else ErrorCode.unknown_member_id,
                         f"Group {group_id} uses the consumer group protocol.")
        classic = ClassicGroup(group_id, offsets=group.offsets,
                               state_timestamp=self.clock.now_ms())
        self.register_group(classic)
        return classic

    def _get_or_create(self, group_id: str) -> ClassicGroup:
        group = self._classic(group_id, convert=True)
        if group is None:
            group = ClassicGroup(group_id, state_timestamp=self.clock.now_ms())
            self.groups[group_id] = group
            self.partitions[self.partition_for(group_id)].groups.add(group_id)
        return group

    # --- persistence ------------------------------------------------------------------
    async def _write(self, group_id: str, records: list[tuple[bytes, bytes | None]]) -> None:
        if not records:
            return
        now = self.clock.now_ms()
        batch = build_batch([NewRecord(key=k, value=v, timestamp=now) for k, v in records])
        try:
            self.replicas.append(OFFSETS_TOPIC, self.partition_for(group_id), batch, -1)
        except KafkaError as e:
            log.warning("Could not write group %s to %s: %s", group_id, OFFSETS_TOPIC, e)
            if e.code in (ErrorCode.not_leader_or_follower,
                          ErrorCode.unknown_topic_or_partition):
                raise _error(ErrorCode.not_coordinator) from None
            raise _error(ErrorCode.coordinator_not_available) from None

    async def _store_group(self, group: ClassicGroup) -> None:
        await self._write(group.group_id, [group_store.group_record(group)])

    # --- JoinGroup --------------------------------------------------------------------
    async def join_group(self, group_id: str, member_id: str, instance_id: str | None,
                         protocol_type: str, protocols: list[tuple[str, bytes]],
                         session_timeout_ms: int, rebalance_timeout_ms: int, client_id: str,
                         client_host: str, require_known_member_id: bool) -> JoinResult:
        self._check_coordinator(group_id)
        lo = self.config.get("group.min.session.timeout.ms")
        hi = self.config.get("group.max.session.timeout.ms")
        if not lo <= session_timeout_ms <= hi:
            raise _error(ErrorCode.invalid_session_timeout,
                         f"The session timeout {session_timeout_ms} ms is not within "
                         f"[{lo}, {hi}] (group.min/max.session.timeout.ms).")
        group = self._classic(group_id, convert=True)
        if group is None:
            if member_id:
                raise _error(ErrorCode.unknown_member_id)
            group = self._get_or_create(group_id)
        if group.in_state(GroupState.DEAD):
            raise _error(ErrorCode.coordinator_not_available)
        names = [n for n, _ in protocols]
        if not protocol_type or not protocols or not group.supports(protocol_type, names):
            raise _error(ErrorCode.inconsistent_group_protocol,
                         "The group member's supported protocols are incompatible with "
                         "those of existing members or first group member tried to join "
                         "with empty protocol type or empty protocol list.")
        now = self.clock.monotonic()
        if not member_id:
            new_id = f"{client_id}-{uuid.uuid4()}"
            if instance_id is not None:
                return await self._join_static(group, new_id, instance_id, protocol_type,
                                               protocols, session_timeout_ms,
                                               rebalance_timeout_ms, client_id, client_host)
            if len(group.members) + len(group.pending_members) >= \
                    self.config.get("group.max.size"):
                raise _error(ErrorCode.group_max_size_reached)
            if require_known_member_id:
                group.pending_members[new_id] = now + session_timeout_ms / 1000
                return JoinResult(ErrorCode.member_id_required, new_id)
            member = self._add_member(group, new_id, None, protocol_type, protocols,
                                      session_timeout_ms, rebalance_timeout_ms, client_id,
                                      client_host)
            return await self._await_join(group, member)
        if instance_id is not None and \
                group.static_members.get(instance_id) not in (None, member_id):
            raise _fenced(instance_id)
        if member_id in group.pending_members:
            del group.pending_members[member_id]
            member = self._add_member(group, member_id, instance_id, protocol_type, protocols,
                                      session_timeout_ms, rebalance_timeout_ms, client_id,
                                      client_host)
            return await self._await_join(group, member)
        member = self._validate_member(group, member_id, instance_id)
        member.heartbeat_deadline = now + session_timeout_ms / 1000
        changed = member.protocols != protocols
        member.protocols = list(protocols)
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        if group.in_state(GroupState.PREPARING_REBALANCE):
            return await self._await_join(group, member)
        if group.in_state(GroupState.COMPLETING_REBALANCE):
            if not changed:
                return self._join_result(group, member)
            self._prepare_rebalance(group, f"member {member_id} changed its protocols")
            return await self._await_join(group, member)
        if group.in_state(GroupState.STABLE):
            if member_id == group.leader_id or changed:
                self._prepare_rebalance(group, f"leader or changed member {member_id} "
                                               "rejoined")
                return await self._await_join(group, member)
            return self._join_result(group, member)
        raise _error(ErrorCode.unknown_member_id)

    def _validate_member(self, group: ClassicGroup, member_id: str,
                         instance_id: str | None) -> Member:
        """The member a request names, checked as Kafka's validateCurrentMember does: a
        group instance id comes first (FENCED_INSTANCE_ID when a newer instance of that static
        member replaced `member_id`, UNKNOWN_MEMBER_ID when the instance is unknown), then the
        member id (UNKNOWN_MEMBER_ID). A fenced zombie must hear FENCED_INSTANCE_ID, which
        clients treat as fatal: after UNKNOWN_MEMBER_ID it would rejoin with its instance id
        and fence the newer instance in turn."""
        if instance_id is not None:
            known = group.static_members.get(instance_id)
            if known is None:
                raise _error(ErrorCode.unknown_member_id)
            if known != member_id:
                raise _fenced(instance_id)
        member = group.members.get(member_id)
        if member is None:
            raise _error(ErrorCode.unknown_member_id)
        return member

    async def _join_static(self, group: ClassicGroup, new_id: str, instance_id: str,
                           protocol_type: str, protocols: list[tuple[str, bytes]],
                           session_ms: int, rebalance_ms: int, client_id: str,
                           client_host: str) -> JoinResult:
        old_id = group.static_members.get(instance_id)
        old = group.members.get(old_id) if old_id else None
        if old is None:
            member = self._add_member(group, new_id, instance_id, protocol_type, protocols,
                                      session_ms, rebalance_ms, client_id, client_host)
            return await self._await_join(group, member)
        # A known static member restarted: it takes over the old member's place (and
        # assignment); the old id is fenced. As in Kafka, a Stable group does not rebalance
        # unless the new protocols change the group's selected protocol: the subscription
        # bytes may well differ (a cooperative client lists the partitions it owns, none
        # after a restart), which is no reason to move partitions.
        del group.members[old.member_id]
        for fut in (old.join_future, old.sync_future):
            if fut is not None and not fut.done():
                fut.set_result(JoinResult(ErrorCode.fenced_instance_id, old.member_id)
                               if fut is old.join_future else
                               SyncResult(ErrorCode.fenced_instance_id))
        old.join_future = old.sync_future = None
        old.member_id = new_id
        old.client_id, old.client_host = client_id, client_host
        old.session_timeout_ms, old.rebalance_timeout_ms = session_ms, rebalance_ms
        old.protocols = list(protocols)
        old.heartbeat_deadline = self.clock.monotonic() + session_ms / 1000
        group.members[new_id] = old
        group.static_members[instance_id] = new_id
        if group.leader_id == old_id:
            group.leader_id = new_id
        if group.in_state(GroupState.STABLE) and \
                group.select_protocol() == group.protocol_name:
            await self._store_group(group)
            result = self._join_result(group, old)
            if new_id == group.leader_id:  # the leader need not assign again (KIP-814)
                result = JoinResult(result.error, result.member_id, result.generation_id,
                                    result.protocol_type, result.protocol_name, result.leader,
                                    result.members, skip_assignment=True)
            return result
        if group.in_state(GroupState.PREPARING_REBALANCE):
            return await self._await_join(group, old)
        self._prepare_rebalance(group, f"static member {instance_id} rejoined")
        return await self._await_join(group, old)

    def _add_member(self, group: ClassicGroup, member_id: str, instance_id: str | None,
                    protocol_type: str, protocols: list[tuple[str, bytes]], session_ms: int,
                    rebalance_ms: int, client_id: str, client_host: str) -> Member:
        member = Member(member_id, instance_id, client_id, client_host, rebalance_ms,
                        session_ms, protocol_type, list(protocols), is_new=True)
        member.heartbeat_deadline = self.clock.monotonic() + session_ms / 1000
        if not group.members:
            group.protocol_type = protocol_type
        group.members[member_id] = member
        if instance_id is not None:
            group.static_members[instance_id] = member_id
        if group.leader_id is None:
            group.leader_id = member_id
        group.new_member_added = True
        if not group.in_state(GroupState.PREPARING_REBALANCE):
            self._prepare_rebalance(group, f"new member {member_id} joined")
        return member

    async def _await_join(self, group: ClassicGroup, member: Member) -> JoinResult:
        if member.join_future is None or member.join_future.done():
            member.join_future = asyncio.get_running_loop().create_future()
        future = member.join_future
        self._maybe_complete_join(group)
        return await future

    def _join_result(self, group: ClassicGroup, member: Member) -> JoinResult:
        members: tuple[tuple[str, str | None, bytes], ...] = ()
        if member.member_id == group.leader_id:
            members = tuple((m.member_id, m.group_instance_id,
                             m.metadata(group.protocol_name or ""))
                            for m in group.members.values())
        return JoinResult(ErrorCode.none, member.member_id, group.generation_id,
                          group.protocol_type, group.protocol_name, group.leader_id or "",
                          members)

    def _prepare_rebalance(self, group: ClassicGroup, reason: str) -> None:
        loop = asyncio.get_running_loop()
        if group.in_state(GroupState.COMPLETING_REBALANCE):
            for m in group.members.values():
                m.assignment = b""
                if m.awaiting_sync:
                    m.sync_future.set_result(SyncResult(ErrorCode.rebalance_in_progress))
                m.sync_future = None
        if group.join_timer is not None:
            group.join_timer.cancel()
        rebalance_s = max((m.rebalance_timeout_ms for m in group.members.values()),
                          default=0) / 1000
        if group.in_state(GroupState.EMPTY):
            delay = self.config.get("group.initial.rebalance.delay.ms") / 1000
            group.initial_join_deadline = loop.time() + rebalance_s
            group.new_member_added = False
            group.join_timer = loop.call_later(delay, self._initial_delay_expired, group, delay)
            group.in_initial_delay = delay > 0
        else:
            group.in_initial_delay = False
            group.join_timer = loop.call_later(rebalance_s, self._complete_join, group)
        log.info("Preparing to rebalance group %s in state %s with old generation %d (%s)",
                 group.group_id, group.state.value, group.generation_id, reason)
        group.transition(GroupState.PREPARING_REBALANCE)
        group.state_timestamp = self.clock.now_ms()

    def _initial_delay_expired(self, group: ClassicGroup, delay: float) -> None:
        loop = asyncio.get_running_loop()
        remaining = group.initial_join_deadline - loop.time()
        if group.new_member_added and remaining > 0:
            group.new_member_added = False
            group.join_timer = loop.call_later(min(delay, remaining),
                                               self._initial_delay_expired, group, delay)
            return
        group.in_initial_delay = False
        self._maybe_complete_join(group, force=not group.all_joined())

    def _maybe_complete_join(self, group: ClassicGroup, force: bool = False) -> None:
        if not group.in_state(GroupState.PREPARING_REBALANCE) or group.in_initial_delay:
            return
        if force or group.all_joined():
            self._complete_join(group)

    def _complete_join(self, group: ClassicGroup) -> None:
        if not group.in_state(GroupState.PREPARING_REBALANCE):
            return
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        # Dynamic members that did not rejoin in time are removed. Static members stay, as
        # in Kafka: one restarting slowly keeps its place (and gets an assignment) until its
        # session expires, and rejoins the new generation without another rebalance.
        for m in [m for m in group.members.values()
                  if not m.awaiting_join and m.group_instance_id is None]:
            log.info("Member %s of group %s did not rejoin in time; removing it",
                     m.member_id, group.group_id)
            self._remove_member(group, m)
        if group.members and not any(m.awaiting_join for m in group.members.values()):
            # Only static members that have not rejoined are left: nobody could lead the new
            # generation. Wait another rebalance timeout (they rejoin, or their sessions
            # expire and they are removed), as Kafka does.
            log.info("Group %s could not complete its rebalance: no member rejoined",
                     group.group_id)
            rebalance_s = max(m.rebalance_timeout_ms for m in group.members.values()) / 1000
            group.join_timer = asyncio.get_running_loop().call_later(
                rebalance_s, self._complete_join, group)
            return
        group.generation_id += 1
        group.state_timestamp = self.clock.now_ms()
        if not group.members:
            group.protocol_name = None
            group.leader_id = None
            group.transition(GroupState.EMPTY)
            group.empty_write = self._spawn(self._store_group(group))
            log.info("Group %s is now empty (generation %d)", group.group_id,
                     group.generation_id)
            return
        group.protocol_name = group.select_protocol()
        leader = group.members.get(group.leader_id or "")
        if leader is None or not leader.awaiting_join:
            # The leader must be a member that rejoined: it alone gets the members' metadata.
            group.leader_id = next(m.member_id for m in group.members.values()
                                   if m.awaiting_join)
        group.transition(GroupState.COMPLETING_REBALANCE)
        log.info("Stabilized group %s generation %d (%s) with %d members", group.group_id,
                 group.generation_id, group.protocol_name, len(group.members))
        now = self.clock.monotonic()
        for m in group.members.values():
            m.is_new = False
            m.heartbeat_deadline = now + m.session_timeout_ms / 1000
            fut, m.join_future = m.join_future, None
            if fut is not None and not fut.done():
                fut.set_result(self._join_result(group, m))

    def _remove_member(self, group: ClassicGroup, member: Member) -> None:
        group.members.pop(member.member_id, None)
        if member.group_instance_id is not None and \
                group.static_members.get(member.group_instance_id) == member.member_id:
            del group.static_members[member.group_instance_id]
        for fut in (member.join_future, member.sync_future):
            if fut is not None and not fut.done():
                fut.set_result(JoinResult(ErrorCode.unknown_member_id, member.member_id)
                               if fut is member.join_future else
                               SyncResult(ErrorCode.unknown_member_id))
        member.join_future = member.sync_future = None
        if group.leader_id == member.member_id:
            group.leader_id = next(iter(group.members), None)

    def _member_gone(self, group: ClassicGroup, member: Member, reason: str) -> None:
        """A member left or expired: remove it and rebalance what is left."""
        self._remove_member(group, member)
        log.info("Member %s left group %s (%s)", member.member_id, group.group_id, reason)
        if group.in_state(GroupState.PREPARING_REBALANCE):
            self._maybe_complete_join(group)
        elif group.in_state(GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, f"removing member {member.member_id}: {reason}")
            if not group.members:
                self._complete_join(group)

    # --- SyncGroup --------------------------------------------------------------------
    async def sync_group(self, group_id: str, generation_id: int, member_id: str,
                         instance_id: str | None, protocol_type: str | None,
                         protocol_name: str | None, assignments: dict[str, bytes]
                         ) -> SyncResult:
        self._check_coordinator(group_id)
        group = self._classic(group_id)
        if group is None:
            raise _error(ErrorCode.unknown_member_id)
        self._validate_member(group, member_id, instance_id)
        if generation_id != group.generation_id:
            raise _error(ErrorCode.illegal_generation)
        if (protocol_type is not None and protocol_type != group.protocol_type) or \
                (protocol_name is not None and protocol_name != group.protocol_name):
            raise _error(ErrorCode.inconsistent_group_protocol)
        member = group.members[member_id]
        member.heartbeat_deadline = self.clock.monotonic() + member.session_timeout_ms / 1000
        if group.in_state(GroupState.PREPARING_REBALANCE):
            raise _error(ErrorCode.rebalance_in_progress)
        if group.in_state(GroupState.STABLE):
            return SyncResult(ErrorCode.none, member.assignment, group.protocol_type,
                              group.protocol_name)
        if not group.in_state(GroupState.COMPLETING_REBALANCE):
            raise _error(ErrorCode.unknown_member_id)
        member.sync_future = asyncio.get_running_loop().create_future()
        future = member.sync_future
        if member_id == group.leader_id:
            for m in group.members.values():
                m.assignment = assignments.get(m.member_id, b"")
            generation = group.generation_id
            try:
                await self._store_group(group)
            except KafkaError as e:
                if group.in_state(GroupState.COMPLETING_REBALANCE) and \
                        group.generation_id == generation:
                    for m in group.members.values():
                        m.assignment = b""
                        if m.awaiting_sync:
                            m.sync_future.set_result(SyncResult(e.code))
                    self._prepare_rebalance(group, "could not store the assignment")
                raise
            if group.in_state(GroupState.COMPLETING_REBALANCE) and \
                    group.generation_id == generation:
                group.transition(GroupState.STABLE)
                group.state_timestamp = self.clock.now_ms()
                for m in group.members.values():
                    if m.awaiting_sync:
                        m.sync_future.set_result(SyncResult(
                            ErrorCode.none, m.assignment, group.protocol_type,
                            group.protocol_name))
                    m.sync_future = None
        return await future

    # --- Heartbeat and LeaveGroup -------------------------------------------------------
    def heartbeat(self, group_id: str, generation_id: int, member_id: str,
                  instance_id: str | None) -> ErrorCode:
        self._check_coordinator(group_id)
        if isinstance(self.groups.get(group_id), ConsumerGroup):
            return ErrorCode.unknown_member_id
        group = self.groups.get(group_id)
        if group is None or group.in_state(GroupState.EMPTY, GroupState.DEAD):
            return ErrorCode.unknown_member_id
        try:
            member = self._validate_member(group, member_id, instance_id)
        except KafkaError as e:
            return e.code
        if generation_id != group.generation_id:
            return ErrorCode.illegal_generation
        member.heartbeat_deadline = self.clock.monotonic() + member.session_timeout_ms / 1000
        if group.in_state(GroupState.PREPARING_REBALANCE):
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    async def leave_group(self, group_id: str, members: list[tuple[str, str | None]]
                          ) -> list[tuple[str, str | None, ErrorCode]]:
        """Remove members (member id, or group instance id for static members). Each result
        names the member as the request did (an admin removing a static member by instance
        id sends no member id and gets none back, as from Kafka)."""
        self._check_coordinator(group_id)
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            group = None  # its members leave with ConsumerGroupHeartbeat
        results = []
        for member_id, instance_id in members:
            if group is None:
                results.append((member_id, instance_id, ErrorCode.unknown_member_id))
                continue
            target = member_id
            if instance_id is not None:
                known = group.static_members.get(instance_id)
                if known is None:
                    results.append((member_id, instance_id, ErrorCode.unknown_member_id))
                    continue
                if member_id and member_id != known:
                    results.append((member_id, instance_id, ErrorCode.fenced_instance_id))
                    continue
                target = known
            if target in group.pending_members:
                del group.pending_members[target]
                self._maybe_complete_join(group)
                results.append((member_id, instance_id, ErrorCode.none))
                continue
            member = group.members.get(target)
            if member is None:
                results.append((member_id, instance_id, ErrorCode.unknown_member_id))
                continue
            self._member_gone(group, member, "the member left the group (LeaveGroup)")
            results.append((member_id, instance_id, ErrorCode.none))
        # When the last member left, answer once the group's Empty state is written (as
        # Kafka does): otherwise a broker crash right after an acknowledged LeaveGroup brings
        # the group back with its departed members until their sessions expire (and, say,
        # DeleteGroups meanwhile fails with NON_EMPTY_GROUP). A failed write is only logged.
        write = group.empty_write if group is not None else None
        if write is not None and not write.done():
            await asyncio.wait({write})
        return results

    # --- offsets ----------------------------------------------------------------------
    async def commit_offsets(self, group_id: str, generation_id: int, member_id: str,
                             instance_id: str | None, offsets: list[OffsetCommitRequest]
                             ) -> list[tuple[str, int, ErrorCode]]:
        self._check_coordinator(group_id)
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            self.consumer.validate_commit(group, member_id, generation_id)
        elif generation_id < 0 and not member_id and instance_id is None:
            if group is not None and group.members:
                raise _error(ErrorCode.unknown_member_id)
            group = self._get_or_create(group_id)
        else:
            if group is None:
                raise _error(ErrorCode.illegal_generation)
            self._validate_member(group, member_id, instance_id)
            if generation_id != group.generation_id:
                raise _error(ErrorCode.illegal_generation)
            if group.in_state(GroupState.COMPLETING_REBALANCE):
                raise _error(ErrorCode.rebalance_in_progress)
            member = group.members[member_id]
            member.heartbeat_deadline = self.clock.monotonic() + \
                member.session_timeout_ms / 1000
        max_metadata = self.config.get("offset.metadata.max.bytes")
        now = self.clock.now_ms()
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
        if records:
            await self._write(group_id, records)
            for o in accepted:
                group.offsets[(o.topic, o.partition)] = CommittedOffset(
                    o.offset, o.leader_epoch, o.metadata or "", now)
        return results

    def fetch_offsets(self, group_id: str, partitions: list[tuple[str, int]] | None
                      ) -> list[FetchedOffset]:
        self._check_coordinator(group_id)
        group = self.groups.get(group_id)
        committed = group.offsets if group is not None else {}
        if partitions is None:
            return [FetchedOffset(t, p, c.offset, c.leader_epoch, c.metadata)
                    for (t, p), c in sorted(committed.items())]
        out = []
        for t, p in partitions:
            c = committed.get((t, p))
            if c is None:
                out.append(FetchedOffset(t, p, -1, -1, ""))
            else:
                out.append(FetchedOffset(t, p, c.offset, c.leader_epoch, c.metadata))
        return out

    async def delete_offsets(self, group_id: str, partitions: list[tuple[str, int]]
                             ) -> list[tuple[str, int, ErrorCode]]:
        self._check_coordinator(group_id)
        group = self.groups.get(group_id)
        if group is None or (isinstance(group, ClassicGroup) and
                             group.in_state(GroupState.DEAD)):
            raise _error(ErrorCode.group_id_not_found)
        if isinstance(group, ConsumerGroup):
            subscribed = {t for m in group.members.values() for t in m.subscribed_topic_names}
        else:
            subscribed = group.subscribed_topics() if group.members else set()
        if group.members and subscribed is None:
            raise _error(ErrorCode.non_empty_group)
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
        for pstate in self.partitions.values():
            if pstate.loading:
                raise _error(ErrorCode.coordinator_load_in_progress)
            for gid in sorted(pstate.groups):
                g = self.groups.get(gid)
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
            self._check_coordinator(group_id)
        except KafkaError as e:
            return GroupDescription(group_id, "", "", "", (), e.code)
        g = self.groups.get(group_id)
        if isinstance(g, ConsumerGroup):
            return GroupDescription(group_id, "", "", "", (), ErrorCode.group_id_not_found)
        if g is None or g.in_state(GroupState.DEAD):
            return GroupDescription(group_id, GroupState.DEAD.value, "", "")
        stable = g.in_state(GroupState.STABLE)
        members = tuple(MemberDescription(
            m.member_id, m.group_instance_id, m.client_id, m.client_host,
            m.metadata(g.protocol_name or "") if g.protocol_name else b"",
            m.assignment if stable else b"") for m in g.members.values())
        return GroupDescription(group_id, g.state.value, g.protocol_type or "",
                                g.protocol_name or "" if stable else "", members)

    async def delete_group(self, group_id: str) -> ErrorCode:
        try:
            self._check_coordinator(group_id)
        except KafkaError as e:
            return e.code
        g = self.groups.get(group_id)
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
        self.groups.pop(group_id, None)
        self.partitions[self.partition_for(group_id)].groups.discard(group_id)
        log.info("Deleted group %s", group_id)
        return ErrorCode.none

    # --- timers -----------------------------------------------------------------------
    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self._expire_members()
            now = self.clock.monotonic()
            interval = self.config.get("offsets.retention.check.interval.ms") / 1000
            if now - self._last_expiry >= interval:
                self._last_expiry = now
                await self._expire_offsets()

    def _expire_members(self) -> None:
        now = self.clock.monotonic()
        for group in list(self.groups.values()):
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
        for group in list(self.groups.values()):
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
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(_log_task_failure)
        return task


def _log_task_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Group coordinator task failed", exc_info=task.exception())


__all__ = ["GroupCoordinator", "OFFSETS_TOPIC", "java_string_hash"]
