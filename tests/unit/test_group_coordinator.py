"""strom.coordinator.group_coordinator (with its classic-protocol mixin) on a ManualClock:
coordinator checks, the classic rebalance timers (initial delay, rebalance timeout), session
expiry, committed offsets written to a real __consumer_offsets log and replayed, offset
expiry, group deletion and unloading. The metadata cache and the replica manager are small
fakes; nothing here opens a socket or waits on real time."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest

from strom.clock import ManualClock
from strom.cluster import model
from strom.config import BrokerConfig, TopicConfig
from strom.coordinator.group import GroupState
from strom.coordinator.group_coordinator import OFFSETS_TOPIC, GroupCoordinator
from strom.coordinator.group_registry import GroupRegistry
from strom.coordinator.group_results import OffsetCommitRequest
from strom.log.partition_log import PartitionLog
from strom.protocol.batch import read_header
from strom.protocol.errors import ErrorCode, KafkaError

BROKER = 1
SESSION_MS = 10_000
REBALANCE_MS = 30_000
PROTOCOLS = [("range", b"\x00\x01\x00\x00\x00\x01\x00\x01t")]  # subscription to topic "t"


def topic(name: str, partitions: int, leader: int = BROKER) -> model.TopicInfo:
    return model.TopicInfo(name, uuid.uuid4(), {
        p: model.PartitionInfo(p, (BROKER,), model.PartitionState(leader, 0, (BROKER,)))
        for p in range(partitions)})


class FakeCache:
    """What the coordinator reads of the MetadataCache."""

    def __init__(self, offsets_partitions: int = 2) -> None:
        self.brokers = {BROKER: object()}
        self.topics = {OFFSETS_TOPIC: topic(OFFSETS_TOPIC, offsets_partitions),
                       "t": topic("t", 3)}
        self.listeners = []

    def on_change(self, listener) -> None:
        self.listeners.append(listener)

    def topic(self, name):
        return self.topics.get(name)

    def partition(self, name, p):
        t = self.topics.get(name)
        return t.partitions.get(p) if t else None


class FakeReplicas:
    """Appends go straight to real partition logs of __consumer_offsets."""

    def __init__(self, logs: dict[int, PartitionLog]) -> None:
        self.partitions = {(OFFSETS_TOPIC, p): SimpleNamespace(log=plog, leader_epoch=0)
                           for p, plog in logs.items()}
        self.marker_listeners = []

    def add_txn_marker_listener(self, callback) -> None:
        self.marker_listeners.append(callback)

    def marker(self, p: int, producer_id: int, epoch: int, commit: bool) -> None:
        """As ReplicaManager.append_txn_marker: the control batch, then the listeners."""
        self.partitions[(OFFSETS_TOPIC, p)].log.append_marker(producer_id, epoch, 0, commit, 0)
        for callback in self.marker_listeners:
            callback(OFFSETS_TOPIC, p, producer_id, commit)

    def append(self, topic_name, p, batch, acks, internal_topics_allowed=False):
        assert internal_topics_allowed  # the coordinator writes its internal topic
        data = bytearray(batch)
        return self.partitions[(topic_name, p)].log.append_as_leader(data, read_header(data), 0)

    async def wait_for_replication(self, *args) -> None:
        return None


def config(**extra) -> BrokerConfig:
    values = {"group.initial.rebalance.delay.ms": "3000", "offsets.topic.num.partitions": "2",
              "offsets.retention.minutes": "1"}
    values.update({k.replace("_", "."): str(v) for k, v in extra.items()})
    return BrokerConfig(values)


class Harness:
    def __init__(self, tmp_path, clock: ManualClock | None = None, led=(0,), **extra) -> None:
        self.clock = clock or ManualClock()
        self.config = config(**extra)
        self.cache = FakeCache()
        topic_config = TopicConfig.of(self.config, {"cleanup.policy": "compact"})
        self.logs = {p: PartitionLog.open(str(tmp_path / f"{OFFSETS_TOPIC}-{p}"),
                                          OFFSETS_TOPIC, p, topic_config, self.clock)
                     for p in led}
        self.coordinator = self.new_coordinator()

    def new_coordinator(self) -> GroupCoordinator:
        self.replicas = FakeReplicas(self.logs)
        return GroupCoordinator(BROKER, self.config, self.clock, self.cache, None,
                                self.replicas)

    async def load(self, coordinator: GroupCoordinator | None = None) -> GroupCoordinator:
        coordinator = coordinator or self.coordinator
        coordinator._on_topics_changed({OFFSETS_TOPIC})
        await asyncio.wait_for(asyncio.gather(*coordinator._loaders), 5)
        return coordinator

    def group_in(self, p: int, prefix: str = "g") -> str:
        """A group id that lives in partition `p` of __consumer_offsets."""
        return next(f"{prefix}{i}" for i in range(1000)
                    if self.coordinator.partition_for(f"{prefix}{i}") == p)

    def join(self, group_id: str, member_id: str = "", instance_id: str | None = None):
        return asyncio.ensure_future(self.coordinator.join_group(
            group_id, member_id, instance_id, "consumer", PROTOCOLS, SESSION_MS,
            REBALANCE_MS, "client", "/127.0.0.1", require_known_member_id=True))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def settle() -> None:
    """Let callbacks and woken tasks run (no time passes on the manual clock)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def join_new_member(h: Harness, group_id: str):
    """A new member's two JoinGroups: MEMBER_ID_REQUIRED, then the waiting join."""
    first = await h.join(group_id)
    assert first.error == ErrorCode.member_id_required
    second = h.join(group_id, first.member_id)
    await settle()  # it has joined (and waits) before the caller moves the clock
    return first.member_id, second


def test_registry_checks(tmp_path):
    async def main():
        h = Harness(tmp_path)
        ours, theirs = h.group_in(0), h.group_in(1)
        with pytest.raises(KafkaError) as e:
            h.coordinator.check_coordinator(ours)
        assert e.value.code == ErrorCode.not_coordinator  # partition not loaded yet
        h.coordinator._on_topics_changed({OFFSETS_TOPIC})
        with pytest.raises(KafkaError) as e:
            h.coordinator.check_coordinator(ours)
        assert e.value.code == ErrorCode.coordinator_load_in_progress
        await h.load()
        h.coordinator.check_coordinator(ours)
        for group_id, code in ((theirs, ErrorCode.not_coordinator),
                               ("", ErrorCode.invalid_group_id)):
            with pytest.raises(KafkaError) as e:
                h.coordinator.check_coordinator(group_id)
            assert e.value.code == code
        del h.cache.topics[OFFSETS_TOPIC]
        with pytest.raises(KafkaError) as e:
            h.coordinator.check_coordinator(ours)
        assert e.value.code == ErrorCode.coordinator_not_available
    run(main())


def test_registry_refuses_a_stale_load():
    registry = GroupRegistry(lambda g: 0, lambda: True)
    first = registry.add_partition(0)
    assert registry.remove_partition(0) == []
    second = registry.add_partition(0)
    assert not registry.loaded(0, first, [])  # unloaded and added again meanwhile
    assert second.loading
    assert registry.loaded(0, second, [])
    assert not second.loading


def test_initial_rebalance_delay_runs_on_the_clock(tmp_path):
    async def main():
        h = Harness(tmp_path)
        await h.load()
        group_id = h.group_in(0)
        member_id, join = await join_new_member(h, group_id)
        await settle()
        group = h.coordinator.registry.get(group_id)
        assert group.in_state(GroupState.PREPARING_REBALANCE) and group.in_initial_delay
        h.clock.advance(2999)
        await settle()
        assert not join.done()
        h.clock.advance(1)  # group.initial.rebalance.delay.ms has passed
        result = await asyncio.wait_for(join, 5)
        assert (result.error, result.generation_id, result.leader) == \
            (ErrorCode.none, 1, member_id)
        assert [m[0] for m in result.members] == [member_id]
        sync = await h.coordinator.sync_group(group_id, 1, member_id, None, "consumer",
                                              "range", {member_id: b"assignment"})
        assert (sync.error, sync.assignment) == (ErrorCode.none, b"assignment")
        assert group.in_state(GroupState.STABLE)
        assert h.clock.pending_timers == 0
    run(main())


def test_initial_delay_extends_for_late_joiners_up_to_the_rebalance_timeout(tmp_path):
    async def main():
        h = Harness(tmp_path)
        await h.load()
        group_id = h.group_in(0)
        _, first = await join_new_member(h, group_id)
        for _ in range(12):  # a new member every 2.5 s keeps the group waiting...
            h.clock.advance(2500)
            await settle()
            if first.done():
                break
            await join_new_member(h, group_id)
            await settle()
        # ...but not beyond the rebalance timeout (30 s) after the first join
        assert first.done()
        assert h.clock.monotonic() == pytest.approx(REBALANCE_MS / 1000)
        assert first.result().generation_id == 1
    run(main())


def test_rebalance_timeout_removes_members_that_do_not_rejoin(tmp_path):
    async def main():
        h = Harness(tmp_path)
        await h.load()
        group_id = h.group_in(0)
        a, join_a = await join_new_member(h, group_id)
        b, join_b = await join_new_member(h, group_id)
        # b joined during the initial delay, which then waits 3 s more for others
        h.clock.advance(3000)
        await settle()
        assert not join_a.done()
        h.clock.advance(3000)
        results = await asyncio.wait_for(asyncio.gather(join_a, join_b), 5)
        assert {r.generation_id for r in results} == {1}
        await h.coordinator.sync_group(group_id, 1, a, None, None, None, {a: b"A", b: b"B"})
        # a rejoins (as after a subscription change); b never does
        rejoin = h.join(group_id, a)
        await settle()
        assert h.coordinator.heartbeat(group_id, 1, b, None) == ErrorCode.rebalance_in_progress
        h.clock.advance(REBALANCE_MS - 1)
        await settle()
        assert not rejoin.done()
        h.clock.advance(1)
        result = await asyncio.wait_for(rejoin, 5)
        assert (result.generation_id, result.leader) == (2, a)
        assert [m[0] for m in result.members] == [a]
        assert h.coordinator.heartbeat(group_id, 2, b, None) == ErrorCode.unknown_member_id
    run(main())


def test_session_expiry_empties_the_group_and_writes_it(tmp_path):
    async def main():
        h = Harness(tmp_path, group_initial_rebalance_delay_ms=0)
        await h.load()
        group_id = h.group_in(0)
        member_id, join = await join_new_member(h, group_id)
        await asyncio.wait_for(join, 5)
        await h.coordinator.sync_group(group_id, 1, member_id, None, None, None, {})
        h.clock.advance(SESSION_MS - 1)
        h.coordinator._expire_members()
        assert h.coordinator.heartbeat(group_id, 1, member_id, None) == ErrorCode.none
        h.clock.advance(SESSION_MS + 1)  # no heartbeat for a whole session
        h.coordinator._expire_members()
        group = h.coordinator.registry.get(group_id)
        assert group.in_state(GroupState.EMPTY) and group.generation_id == 2
        await asyncio.wait_for(group.empty_write, 5)
        # what was written is what a new coordinator loads
        again = await h.load(h.new_coordinator())
        loaded = again.registry.get(group_id)
        assert (loaded.generation_id, loaded.members) == (2, {})
        assert again.describe_group(group_id).state == "Empty"
    run(main())


def test_offsets_are_written_and_replayed(tmp_path):
    async def main():
        h = Harness(tmp_path)
        await h.load()
        group_id = h.group_in(0)
        commits = [OffsetCommitRequest("t", 0, 42, 3, "meta"),
                   OffsetCommitRequest("t", 1, 7, -1, None),
                   OffsetCommitRequest("missing", 0, 1, -1, None)]
        results = await h.coordinator.commit_offsets(group_id, -1, "", None, commits)
        assert [r[2] for r in results] == [ErrorCode.none, ErrorCode.none,
                                           ErrorCode.unknown_topic_or_partition]
        again = await h.load(h.new_coordinator())
        fetched = again.fetch_offsets(group_id, [("t", 0), ("t", 1), ("t", 2)])
        assert [(f.partition, f.offset, f.leader_epoch, f.metadata) for f in fetched] == \
            [(0, 42, 3, "meta"), (1, 7, -1, ""), (2, -1, -1, "")]
        assert [o.group_id for o in again.list_groups()] == [group_id]
        # deleting one offset, then the group, is written too
        assert await again.delete_offsets(group_id, [("t", 1)]) == [("t", 1, ErrorCode.none)]
        assert await again.delete_group(group_id) == ErrorCode.none
        assert again.registry.get(group_id) is None
        third = await h.load(h.new_coordinator())
        assert third.registry.get(group_id) is None
        assert third.fetch_offsets(group_id, None) == []
    run(main())


def test_offsets_of_an_empty_group_expire_after_the_retention(tmp_path):
    async def main():
        h = Harness(tmp_path)  # offsets.retention.minutes=1
        await h.load()
        group_id = h.group_in(0)
        await h.coordinator.commit_offsets(group_id, -1, "", None,
                                           [OffsetCommitRequest("t", 0, 5, -1, None)])
        h.clock.advance(60_000)
        await h.coordinator._expire_offsets()
        assert h.coordinator.fetch_offsets(group_id, None)[0].offset == 5
        h.clock.advance(1)
        await h.coordinator._expire_offsets()
        assert h.coordinator.fetch_offsets(group_id, None) == []
        again = await h.load(h.new_coordinator())
        assert again.fetch_offsets(group_id, None) == []
    run(main())


def test_unloading_a_partition_answers_waiting_members(tmp_path):
    async def main():
        h = Harness(tmp_path)
        await h.load()
        group_id = h.group_in(0)
        _, join = await join_new_member(h, group_id)
        await settle()
        h.cache.topics[OFFSETS_TOPIC] = topic(OFFSETS_TOPIC, 2, leader=2)  # moved away
        h.coordinator._on_topics_changed({OFFSETS_TOPIC})
        assert (await asyncio.wait_for(join, 5)).error == ErrorCode.not_coordinator
        assert h.coordinator.registry.get(group_id) is None
        with pytest.raises(KafkaError) as e:
            h.coordinator.check_coordinator(group_id)
        assert e.value.code == ErrorCode.not_coordinator
    run(main())


def test_an_empty_consumer_group_becomes_classic(tmp_path):
    async def main():
        h = Harness(tmp_path, group_initial_rebalance_delay_ms=0)
        await h.load()
        group_id = h.group_in(0)
        hb = await h.coordinator.consumer.heartbeat(
            group_id, "", 0, None, None, 5000, ("t",), None, None, None, "c", "/h")
        with pytest.raises(KafkaError) as e:  # a consumer group with members refuses
            await h.join(group_id)
        assert e.value.code == ErrorCode.inconsistent_group_protocol
        await h.coordinator.consumer.heartbeat(group_id, hb.member_id, -1, None, None, -1,
                                               None, None, None, None, "c", "/h")
        member_id, join = await join_new_member(h, group_id)
        assert (await asyncio.wait_for(join, 5)).leader == member_id
        assert h.coordinator.describe_group(group_id).protocol_type == "consumer"
    run(main())


def test_transactional_offsets_count_on_commit_only_and_replay(tmp_path):
    async def main():
        h = Harness(tmp_path)
        await h.load()
        group_id = h.group_in(0)
        c = h.coordinator
        await c.commit_offsets(group_id, -1, "", None, [OffsetCommitRequest("t", 0, 5, -1, None)])
        for pid, offset in ((100, 10), (101, 99)):
            results = await c.txn_commit_offsets(
                group_id, pid, 0, -1, "", None, [OffsetCommitRequest("t", 0, offset, -1, None)])
            assert results == [("t", 0, ErrorCode.none)]
        # pending: the committed offset stays; require_stable refuses the partition
        assert [f.offset for f in c.fetch_offsets(group_id, [("t", 0)])] == [5]
        stable = c.fetch_offsets(group_id, [("t", 0), ("t", 1)], require_stable=True)
        assert [(f.offset, f.error) for f in stable] == \
            [(-1, ErrorCode.unstable_offset_commit), (-1, ErrorCode.none)]
        h.replicas.marker(0, 101, 0, False)  # aborted: dropped
        h.replicas.marker(0, 100, 0, True)   # committed: visible
        assert [(f.offset, f.error) for f in c.fetch_offsets(
            group_id, [("t", 0)], require_stable=True)] == [(10, ErrorCode.none)]
        # a replay reads the same: the aborted offset never counts
        again = await h.load(h.new_coordinator())
        assert [f.offset for f in again.fetch_offsets(group_id, [("t", 0)])] == [10]
        # an offset whose marker is not in the log yet is pending after a replay too
        await again.txn_commit_offsets(group_id, 102, 0, -1, "", None,
                                       [OffsetCommitRequest("t", 1, 3, -1, None)])
        third = await h.load(h.new_coordinator())
        assert [f.error for f in third.fetch_offsets(group_id, [("t", 1)], True)] == \
            [ErrorCode.unstable_offset_commit]
    run(main())


def test_a_partition_led_again_at_a_newer_epoch_is_loaded_again(tmp_path):
    # Leadership went to another broker and came back between two looks at the metadata:
    # what the other leader wrote meanwhile must be read, not the groups held before.
    async def main():
        h = Harness(tmp_path)
        first = await h.load()
        group_id = h.group_in(0)
        await first.commit_offsets(group_id, -1, "", None,
                                   [OffsetCommitRequest("t", 0, 5, -1, None)])
        other = await h.load(h.new_coordinator())  # the other leader, same log
        await other.commit_offsets(group_id, -1, "", None,
                                   [OffsetCommitRequest("t", 0, 9, -1, None)])
        first.replicas.partitions[(OFFSETS_TOPIC, 0)].leader_epoch = 2
        await h.load(first)
        assert first.registry.partitions[0].coordinator_epoch == 2
        assert first.fetch_offsets(group_id, None)[0].offset == 9
    run(main())
