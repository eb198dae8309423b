"""The classic group protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the
rebalance state machine they drive (see group.py for the states).

A mixin of GroupCoordinator, which provides what `ClassicProtocol` declares: the config,
the clock, the GroupRegistry holding every group, and the writing of a group's record. The
methods here change a ClassicGroup only on the event loop, as every coordinator method does.
Rebalance timers run on the clock (`Clock.call_later`), so a ManualClock drives them in tests.

  JoinGroup     a new member first gets MEMBER_ID_REQUIRED with its id (v4+), then joins;
                the group waits (PreparingRebalance) until every known member has rejoined
                or the rebalance timeout passes; an Empty group first waits
                group.initial.rebalance.delay.ms for more members. Then a new generation:
                the leader gets every member's metadata.
  SyncGroup     the leader's assignments are stored (and written), then every member gets
                its own (CompletingRebalance -> Stable).
  Heartbeat     keeps a member alive for session.timeout.ms and tells it about a rebalance.
  LeaveGroup    removes members at once (a rebalance follows).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from strom.coordinator.consumer_group import ConsumerGroup
from strom.coordinator.group import ClassicGroup, GroupState, Member
from strom.coordinator.group_results import JoinResult, SyncResult
from strom.protocol.errors import ErrorCode, KafkaError, kafka_error

if TYPE_CHECKING:
    from strom.clock import Clock
    from strom.config import BrokerConfig
    from strom.coordinator.group_registry import GroupRegistry

log = logging.getLogger("strom.coordinator.group_coordinator")


def _fenced(instance_id: str) -> KafkaError:
    return kafka_error(ErrorCode.fenced_instance_id,
                       f"Static member {instance_id} was replaced by a newer instance.")


def _answer_waiting(member: Member, code: ErrorCode) -> None:
    """Answer the member's waiting JoinGroup and SyncGroup, if any, with `code` (a member
    that is fenced or removed), and forget them."""
    for fut in (member.join_future, member.sync_future):
        if fut is not None and not fut.done():
            fut.set_result(JoinResult(code, member.member_id) if fut is member.join_future
                           else SyncResult(code))
    member.join_future = member.sync_future = None


class ClassicProtocol:
    """JoinGroup/SyncGroup/Heartbeat/LeaveGroup for GroupCoordinator (see module doc)."""

    config: BrokerConfig
    clock: Clock
    registry: GroupRegistry

    # --- provided by the class this is mixed into --------------------------------------
    async def _store_group(self, group: ClassicGroup) -> None:
        """Write the group's current generation and members (GroupMetadata record)."""
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Run `coro` as a task whose failure is logged."""
        raise NotImplementedError

    # --- the group a request names ------------------------------------------------------
    def _classic(self, group_id: str, convert: bool = False) -> ClassicGroup | None:
        """The classic group `group_id`, or None. A consumer-protocol group with members
        refuses classic requests; an empty one is converted when `convert` (its offsets
        are kept)."""
        group = self.registry.get(group_id)
        if not isinstance(group, ConsumerGroup):
            return group
        if group.members or not convert:
            raise kafka_error(ErrorCode.inconsistent_group_protocol if convert
                              else ErrorCode.unknown_member_id,
                              f"Group {group_id} uses the consumer group protocol.")
        classic = ClassicGroup(group_id, offsets=group.offsets,
                               state_timestamp=self.clock.now_ms())
        self.registry.register(classic)
        return classic

    def _get_or_create(self, group_id: str) -> ClassicGroup:
        group = self._classic(group_id, convert=True)
        if group is None:
            group = ClassicGroup(group_id, state_timestamp=self.clock.now_ms())
            self.registry.register(group)
        return group

    # --- JoinGroup --------------------------------------------------------------------
    async def join_group(self, group_id: str, member_id: str, instance_id: str | None,
                         protocol_type: str, protocols: list[tuple[str, bytes]],
                         session_timeout_ms: int, rebalance_timeout_ms: int, client_id: str,
                         client_host: str, require_known_member_id: bool) -> JoinResult:
        self.registry.check_coordinator(group_id)
        lo = self.config.get("group.min.session.timeout.ms")
        hi = self.config.get("group.max.session.timeout.ms")
        if not lo <= session_timeout_ms <= hi:
            raise kafka_error(ErrorCode.invalid_session_timeout,
                              f"The session timeout {session_timeout_ms} ms is not within "
                              f"[{lo}, {hi}] (group.min/max.session.timeout.ms).")
        group = self._classic(group_id, convert=True)
        if group is None:
            if member_id:
                raise kafka_error(ErrorCode.unknown_member_id)
            group = self._get_or_create(group_id)
        if group.in_state(GroupState.DEAD):
            raise kafka_error(ErrorCode.coordinator_not_available)
        names = [n for n, _ in protocols]
        if not protocol_type or not protocols or not group.supports(protocol_type, names):
            raise kafka_error(ErrorCode.inconsistent_group_protocol,
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
                raise kafka_error(ErrorCode.group_max_size_reached)
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
        raise kafka_error(ErrorCode.unknown_member_id)

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
                raise kafka_error(ErrorCode.unknown_member_id)
            if known != member_id:
                raise _fenced(instance_id)
        member = group.members.get(member_id)
        if member is None:
            raise kafka_error(ErrorCode.unknown_member_id)
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
        _answer_waiting(old, ErrorCode.fenced_instance_id)
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
            group.initial_join_deadline = self.clock.monotonic() + rebalance_s
            group.new_member_added = False
            group.join_timer = self.clock.call_later(delay, self._initial_delay_expired, group,
                                                     delay)
            group.in_initial_delay = delay > 0
        else:
            group.in_initial_delay = False
            group.join_timer = self.clock.call_later(rebalance_s, self._complete_join, group)
        log.info("Preparing to rebalance group %s in state %s with old generation %d (%s)",
                 group.group_id, group.state.value, group.generation_id, reason)
        group.transition(GroupState.PREPARING_REBALANCE)
        group.state_timestamp = self.clock.now_ms()

    def _initial_delay_expired(self, group: ClassicGroup, delay: float) -> None:
        remaining = group.initial_join_deadline - self.clock.monotonic()
        if group.new_member_added and remaining > 0:
            group.new_member_added = False
            group.join_timer = self.clock.call_later(min(delay, remaining),
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
            group.join_timer = self.clock.call_later(rebalance_s, self._complete_join, group)
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
        _answer_waiting(member, ErrorCode.unknown_member_id)
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
        self.registry.check_coordinator(group_id)
        group = self._classic(group_id)
        if group is None:
            raise kafka_error(ErrorCode.unknown_member_id)
        self._validate_member(group, member_id, instance_id)
        if generation_id != group.generation_id:
            raise kafka_error(ErrorCode.illegal_generation)
        if (protocol_type is not None and protocol_type != group.protocol_type) or \
                (protocol_name is not None and protocol_name != group.protocol_name):
            raise kafka_error(ErrorCode.inconsistent_group_protocol)
        member = group.members[member_id]
        member.heartbeat_deadline = self.clock.monotonic() + member.session_timeout_ms / 1000
        if group.in_state(GroupState.PREPARING_REBALANCE):
            raise kafka_error(ErrorCode.rebalance_in_progress)
        if group.in_state(GroupState.STABLE):
            return SyncResult(ErrorCode.none, member.assignment, group.protocol_type,
                              group.protocol_name)
        if not group.in_state(GroupState.COMPLETING_REBALANCE):
            raise kafka_error(ErrorCode.unknown_member_id)
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
        self.registry.check_coordinator(group_id)
        if isinstance(self.registry.get(group_id), ConsumerGroup):
            return ErrorCode.unknown_member_id
        group = self.registry.get(group_id)
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
        self.registry.check_coordinator(group_id)
        group = self.registry.get(group_id)
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
