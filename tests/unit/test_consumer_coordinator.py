"""strom.coordinator.consumer_coordinator (KIP-848 ConsumerGroupHeartbeat) on a GroupRegistry
of its own and a ManualClock: joining, assignment, epochs and fencing, leaving (dynamic and
static), session and revocation expiry, the group size limit, offset-commit validation and
the hand-over between the classic and the consumer protocol."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from strom.clock import ManualClock
from strom.cluster import model
from strom.config import BrokerConfig
from strom.coordinator.consumer_coordinator import ConsumerCoordinator
from strom.coordinator.consumer_group import ConsumerGroup
from strom.coordinator.group import ClassicGroup, CommittedOffset, Member
from strom.coordinator.group_registry import GroupRegistry
from strom.protocol.errors import ErrorCode, KafkaError

SESSION_MS = 45_000  # group.consumer.session.timeout.ms (Kafka's default)
T = uuid.UUID(int=7)


class FakeCache:
    def __init__(self) -> None:
        self.topics = {
            "t": model.TopicInfo("t", T, {p: None for p in range(4)}),
            "__consumer_offsets": model.TopicInfo("__consumer_offsets", uuid.UUID(int=1),
                                                  {0: None}),
        }


def coordinator(**extra) -> tuple[ConsumerCoordinator, GroupRegistry, ManualClock]:
    registry = GroupRegistry(lambda group_id: 0, lambda: True)
    registry.loaded(0, registry.add_partition(0), [])
    clock = ManualClock()
    config = BrokerConfig({k.replace("_", "."): str(v) for k, v in extra.items()})
    return ConsumerCoordinator(registry, config, clock, FakeCache()), registry, clock


def heartbeat(c: ConsumerCoordinator, member_id: str = "", epoch: int = 0, *,
              instance_id: str | None = None, topics=("t",), owned=None, group="g"):
    return asyncio.run(c.heartbeat(
        group, member_id, epoch, instance_id, None, 30_000 if epoch == 0 else -1,
        topics if epoch == 0 else None, None, None, owned, "client", "/127.0.0.1"))


def error_of(call) -> ErrorCode:
    with pytest.raises(KafkaError) as e:
        call()
    return e.value.code


def test_a_member_joins_and_gets_every_partition():
    c, registry, _ = coordinator()
    r = heartbeat(c)
    assert r.member_id and r.member_epoch >= 1
    assert r.assignment == {T: {0, 1, 2, 3}}
    assert r.heartbeat_interval_ms == 5000  # group.consumer.heartbeat.interval.ms
    group = registry.get("g")
    assert isinstance(group, ConsumerGroup) and list(group.members) == [r.member_id]
    same = heartbeat(c, r.member_id, r.member_epoch, owned={T: {0, 1, 2, 3}})
    assert (same.member_epoch, same.assignment) == (r.member_epoch, {T: {0, 1, 2, 3}})
    assert group.state == "Stable"


def test_a_second_member_gets_partitions_once_the_first_revokes_them():
    c, registry, _ = coordinator()
    a = heartbeat(c)
    b = heartbeat(c)
    assert b.member_epoch > a.member_epoch and b.assignment == {}  # a owns everything
    a2 = heartbeat(c, a.member_id, a.member_epoch, owned={T: {0, 1, 2, 3}})
    kept = a2.assignment[T]
    assert len(kept) == 2  # told to revoke the other half
    heartbeat(c, a.member_id, a2.member_epoch, owned={T: kept})
    b2 = heartbeat(c, b.member_id, b.member_epoch, owned={})
    assert b2.assignment[T] == {0, 1, 2, 3} - kept


def test_epochs_are_checked():
    c, _, _ = coordinator()
    r = heartbeat(c)
    assert error_of(lambda: heartbeat(c, r.member_id, r.member_epoch + 1)) == \
        ErrorCode.fenced_member_epoch
    assert error_of(lambda: heartbeat(c, "nobody", 1)) == ErrorCode.unknown_member_id
    assert error_of(lambda: heartbeat(c, r.member_id, -3)) == ErrorCode.invalid_request
    assert error_of(lambda: heartbeat(c, topics=None)) == ErrorCode.invalid_request
    assert error_of(lambda: heartbeat(c, "x", 1, group="other")) == \
        ErrorCode.unknown_member_id  # no such group, and no join


def test_a_member_leaves():
    c, registry, _ = coordinator()
    r = heartbeat(c)
    gone = heartbeat(c, r.member_id, -1)
    assert (gone.member_epoch, gone.assignment) == (-1, None)
    assert registry.get("g").members == {}


def test_a_static_member_keeps_its_place_until_its_session_ends():
    c, registry, clock = coordinator()
    first = heartbeat(c, instance_id="i1")
    heartbeat(c, first.member_id, -2, instance_id="i1")  # leaving to restart
    group = registry.get("g")
    assert list(group.members) == [first.member_id]
    back = heartbeat(c, "new-id", 0, instance_id="i1")
    assert back.member_id == "new-id" and list(group.members) == ["new-id"]
    assert back.assignment == {T: {0, 1, 2, 3}}
    heartbeat(c, "new-id", -2, instance_id="i1")
    clock.advance(SESSION_MS + 1)
    c.expire(group)
    assert group.members == {}


def test_sessions_expire_on_the_clock():
    c, registry, clock = coordinator(group_consumer_session_timeout_ms=10_000)
    a = heartbeat(c)
    group = registry.get("g")
    clock.advance(9_000)
    heartbeat(c, a.member_id, a.member_epoch, owned={T: {0, 1, 2, 3}})  # renews it
    clock.advance(9_000)
    c.expire(group)
    assert list(group.members) == [a.member_id]
    clock.advance(1_001)
    c.expire(group)
    assert group.members == {}
    assert error_of(lambda: heartbeat(c, a.member_id, a.member_epoch)) == \
        ErrorCode.unknown_member_id


def test_a_member_that_does_not_revoke_in_time_is_removed():
    c, registry, clock = coordinator()
    a = heartbeat(c)
    heartbeat(c)
    revoking = heartbeat(c, a.member_id, a.member_epoch, owned={T: {0, 1, 2, 3}})
    assert len(revoking.assignment[T]) == 2
    member = registry.get("g").members[a.member_id]
    assert member.revocation_deadline is not None
    clock.advance(30_001)  # the rebalance timeout of its join
    c.expire(registry.get("g"))
    assert a.member_id not in registry.get("g").members


def test_group_size_limit():
    c, _, _ = coordinator(group_consumer_max_size=1)
    heartbeat(c)
    assert error_of(lambda: heartbeat(c)) == ErrorCode.group_max_size_reached


def test_validate_commit():
    c, registry, _ = coordinator()
    r = heartbeat(c)
    group = registry.get("g")
    epoch = r.member_epoch
    c.validate_commit(group, r.member_id, epoch)
    assert error_of(lambda: c.validate_commit(group, r.member_id, epoch + 1)) == \
        ErrorCode.fenced_member_epoch
    assert error_of(lambda: c.validate_commit(group, r.member_id, epoch - 1)) == \
        ErrorCode.stale_member_epoch
    assert error_of(lambda: c.validate_commit(group, "x", epoch)) == \
        ErrorCode.unknown_member_id
    assert error_of(lambda: c.validate_commit(group, "", -1)) == ErrorCode.unknown_member_id
    heartbeat(c, r.member_id, -1)
    c.validate_commit(group, "", -1)  # an admin's commit to an empty group


def test_classic_groups_hand_over_only_when_empty():
    c, registry, _ = coordinator()
    classic = ClassicGroup("g")
    classic.offsets[("t", 0)] = CommittedOffset(5, -1, "", 0)
    classic.members["m"] = Member("m", None, "c", "/h", 1000, 1000, "consumer", [])
    registry.loaded(0, registry.partitions[0], [classic])
    assert error_of(lambda: heartbeat(c)) == ErrorCode.group_id_not_found
    del classic.members["m"]
    r = heartbeat(c)
    group = registry.get("g")
    assert isinstance(group, ConsumerGroup) and r.member_id in group.members
    assert group.offsets == {("t", 0): CommittedOffset(5, -1, "", 0)}  # kept
    assert registry.partitions[0].groups == {"g"}


def test_requests_for_a_group_elsewhere_are_refused():
    registry = GroupRegistry(lambda group_id: 1, lambda: True)  # partition 1 is not ours
    c = ConsumerCoordinator(registry, BrokerConfig({}), ManualClock(), FakeCache())
    assert error_of(lambda: heartbeat(c)) == ErrorCode.not_coordinator
