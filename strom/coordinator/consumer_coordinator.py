"""The consumer group protocol (KIP-848) on top of the GroupCoordinator.

ConsumerGroupHeartbeat does everything a member needs: joining (member epoch 0), leaving
(-1, or -2 for a static member that will come back), keeping its session and subscription,
and receiving its assignment step by step (see consumer_group.py). The assignment is
computed here, on the broker, by the `uniform` or `range` assignor.

Membership is kept in memory only: after a coordinator restart members get
UNKNOWN_MEMBER_ID and join again with epoch 0, and their committed offsets (which are
written to __consumer_offsets like every group's) are intact. See docs/deviations.md.
Groups are found in, and added to, the GroupRegistry shared with the classic protocol.
Owned by the event loop, with that registry.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strom.coordinator.assignors import ASSIGNORS, Assignment
from strom.coordinator.consumer_group import (
    ConsumerGroup,
    ConsumerMember,
    MemberState,
    compile_topic_regex,
)
from strom.protocol.errors import ErrorCode, kafka_error

if TYPE_CHECKING:
    from strom.clock import Clock
    from strom.cluster.metadata_cache import MetadataCache
    from strom.config import BrokerConfig
    from strom.coordinator.group_registry import GroupRegistry

log = logging.getLogger(__name__)

LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: Assignment | None


class ConsumerCoordinator:
    def __init__(self, registry: GroupRegistry, config: BrokerConfig, clock: Clock,
                 cache: MetadataCache) -> None:
        self.registry = registry
        self.config = config
        self.clock = clock
        self.cache = cache

    def _topics(self) -> tuple[dict[str, uuid.UUID], dict[uuid.UUID, int]]:
        names = {t.name: t.topic_id for t in self.cache.topics.values() if not t.is_internal}
        counts = {t.topic_id: len(t.partitions) for t in self.cache.topics.values()}
        return names, counts

    def _session_s(self) -> float:
        return self.config.get("group.consumer.session.timeout.ms") / 1000

    def _group(self, group_id: str, create: bool) -> ConsumerGroup:
        group = self.registry.get(group_id)
        if group is None:
            if not create:
                raise kafka_error(ErrorCode.unknown_member_id)
            group = ConsumerGroup(group_id, state_timestamp=self.clock.now_ms())
            self.registry.register(group)
            return group
        if not isinstance(group, ConsumerGroup):
            if group.members:
                raise kafka_error(ErrorCode.group_id_not_found,
                                  f"Group {group_id} is a classic group with members.")
            # an empty classic group (only offsets) becomes a consumer group
            converted = ConsumerGroup(group_id, offsets=group.offsets,
                                      state_timestamp=self.clock.now_ms())
            self.registry.register(converted)
            return converted
        return group

    async def heartbeat(self, group_id: str, member_id: str, member_epoch: int,
                        instance_id: str | None, rack_id: str | None,
                        rebalance_timeout_ms: int, topic_names: tuple[str, ...] | None,
                        topic_regex: str | None, server_assignor: str | None,
                        owned: Assignment | None, client_id: str, client_host: str
                        ) -> HeartbeatResult:
        self.registry.check_coordinator(group_id)
        if member_epoch == 0:  # Kafka's checks of a join
            if rebalance_timeout_ms == -1:
                raise kafka_error(ErrorCode.invalid_request,
                                  "RebalanceTimeoutMs must be provided in first request.")
            if topic_names is None and topic_regex is None:
                raise kafka_error(ErrorCode.invalid_request,
                                  "Either SubscribedTopicNames or SubscribedTopicRegex must be "
                                  "non-null when (re-)joining.")
        elif member_epoch < STATIC_LEAVE_EPOCH:
            raise kafka_error(ErrorCode.invalid_request, "MemberEpoch is invalid.")
        if topic_regex:
            compile_topic_regex(topic_regex)  # INVALID_REGULAR_EXPRESSION, as Kafka
        if server_assignor is not None and server_assignor not in ASSIGNORS:
            raise kafka_error(ErrorCode.unsupported_assignor,
                              f"Assignor {server_assignor} is not supported; use one of "
                              f"{', '.join(sorted(ASSIGNORS))}.")
        interval = self.config.get("group.consumer.heartbeat.interval.ms")
        now = self.clock.monotonic()
        if member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
            group = self.registry.get(group_id)
            if isinstance(group, ConsumerGroup):
                gone = self._find(group, member_id, instance_id)
                if gone is not None and member_epoch == STATIC_LEAVE_EPOCH and \
                        gone.instance_id is not None:
                    # a static member going away for a restart keeps its place (and its
                    # partitions) until its session times out, as in Kafka
                    gone.session_deadline = now + self._session_s()
                    log.info("Static member %s of consumer group %s left temporarily",
                             gone.member_id, group_id)
                elif gone is not None:
                    group.remove(gone.member_id)
                    log.info("Member %s left consumer group %s (epoch %d)", gone.member_id,
                             group_id, member_epoch)
            return HeartbeatResult(member_id, member_epoch, interval, None)
        group = self._group(group_id, create=member_epoch == 0)
        member = self._find(group, member_id, instance_id)
        if member_epoch == 0:
            if member is None:
                if len(group.members) >= self.config.get("group.consumer.max.size"):
                    raise kafka_error(ErrorCode.group_max_size_reached)
                member = ConsumerMember(member_id or str(uuid.uuid4()), instance_id,
                                        rack_id, client_id, client_host,
                                        rebalance_timeout_ms)
                group.members[member.member_id] = member
                group.bump()
                log.info("Member %s joined consumer group %s", member.member_id, group_id)
            elif member.member_id != member_id and instance_id is not None:
                # a static member came back under a new id: it takes the old place (and
                # its target assignment)
                old_id = member.member_id
                del group.members[old_id]
                member.member_id = member_id or old_id
                group.members[member.member_id] = member
                if old_id in group.target:
                    group.target[member.member_id] = group.target.pop(old_id)
            else:
                member.member_epoch = 0
                member.assigned, member.pending_revocation = {}, {}
                member.state = MemberState.STABLE
                group.bump()
        else:
            if member is None or member.member_id != member_id:
                raise kafka_error(ErrorCode.unknown_member_id,
                                  f"Member {member_id} is not a member of group {group_id}.")
            if member_epoch != member.member_epoch and not (
                    member_epoch == member.previous_member_epoch and owned is not None
                    and _subset(owned, member.assigned)):
                raise kafka_error(ErrorCode.fenced_member_epoch,
                                  f"The member epoch {member_epoch} is not the current epoch "
                                  f"{member.member_epoch}.")
        member.session_deadline = now + self._session_s()
        member.client_id, member.client_host = client_id, client_host
        if rebalance_timeout_ms > 0:
            member.rebalance_timeout_ms = rebalance_timeout_ms
        changed = False
        if topic_names is not None and tuple(sorted(topic_names)) != \
                member.subscribed_topic_names:
            member.subscribed_topic_names = tuple(sorted(topic_names))
            changed = True
        if topic_regex is not None and topic_regex != member.subscribed_topic_regex:
            member.subscribed_topic_regex = topic_regex or None
            changed = True
        if server_assignor is not None and server_assignor != member.server_assignor:
            member.server_assignor = server_assignor
            changed = True
        if changed:
            group.bump()
        names, counts = self._topics()
        group.refresh_subscriptions(names, counts)
        group.compute_target(names)
        group.reconcile(member, owned, now)
        return HeartbeatResult(member.member_id, member.member_epoch, interval,
                               {t: set(ps) for t, ps in member.assigned.items()})

    @staticmethod
    def _find(group: ConsumerGroup, member_id: str, instance_id: str | None
              ) -> ConsumerMember | None:
        if instance_id is not None:
            for m in group.members.values():
                if m.instance_id == instance_id:
                    return m
        return group.members.get(member_id)

    def expire(self, group: ConsumerGroup) -> None:
        """Remove members whose session or revocation deadline passed."""
        now = self.clock.monotonic()
        for m in list(group.members.values()):
            reason = None
            if m.session_deadline <= now:
                reason = "its session timed out"
            elif m.revocation_deadline is not None and m.revocation_deadline <= now:
                reason = "it did not revoke its partitions within the rebalance timeout"
            if reason:
                group.remove(m.member_id)
                log.info("Member %s removed from consumer group %s: %s", m.member_id,
                         group.group_id, reason)

    def validate_commit(self, group: ConsumerGroup, member_id: str, epoch: int) -> None:
        """OffsetCommit by a member of a consumer group (epoch -1 with no member: admin)."""
        if epoch < 0 and not member_id:
            if group.members:
                raise kafka_error(ErrorCode.unknown_member_id)
            return
        member = group.members.get(member_id)
        if member is None:
            raise kafka_error(ErrorCode.unknown_member_id)
        if epoch > member.member_epoch:
            raise kafka_error(ErrorCode.fenced_member_epoch)
        if epoch < member.member_epoch:
            raise kafka_error(ErrorCode.stale_member_epoch)


def _subset(a: Assignment, b: Assignment) -> bool:
    return all(ps <= b.get(t, set()) for t, ps in a.items())
