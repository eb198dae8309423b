"""Consumer groups with real clients against a real strom broker (issue 4, points 1-3).

confluent-kafka (librdkafka), kafka-python and aiokafka consumers join groups, share a topic's
partitions, rebalance when members join, leave (close()), die (kill -9 of a consumer process)
or stop polling (max.poll.interval.ms), keep their place as static members
(group.instance.id), commit offsets with metadata strings, and continue where the last
commit stopped, also across a broker restart. The AdminClient lists, describes and deletes
groups and their offsets.

The shared broker runs with group.initial.rebalance.delay.ms=0 and
group.min.session.timeout.ms=1000 so that groups form at once and dead members expire in a
few seconds. Every wait is bounded; nothing asserts how long something took, only that it
happened (and, for close() and static members, that it happened before a session timeout
could have caused it).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from strom.testing import groups
from strom.testing.groups import (
    ChildConsumer,
    admin,
    assigned,
    close_all,
    consumer_conf,
    describe,
    group_offsets,
    parts,
    poll_until,
    process_across_rebalances,
    wait_described,
)
from strom.testing.kafka import create_topic

pytestmark = pytest.mark.timeout(150)

GROUP_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
}
SESSION_MS = 3000  # allowed by group.min.session.timeout.ms=1000 above
HEARTBEAT_MS = 300


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker_overrides():
    """conftest's `module_broker` runs tuned for fast group formation and expiry."""
    return GROUP_OVERRIDES


@pytest.fixture(scope="module")
def gbroker(module_broker):
    return module_broker


# -- helpers -------------------------------------------------------------------------------


def cconf(bootstrap: str, group: str, **extra) -> dict:
    return consumer_conf(bootstrap, group, **{"session.timeout.ms": SESSION_MS,
                                              "heartbeat.interval.ms": HEARTBEAT_MS, **extra})


produce = functools.partial(groups.produce, keyed=True)


def generation(consumer: Consumer) -> int:
    """The group generation librdkafka's consumer is in, from its serialized consumer group
    metadata (b"CGMDv2:" + native int32 generation + group\\0 member\\0 instance\\0)."""
    data = consumer.consumer_group_metadata()
    assert data.startswith(b"CGMDv2:"), data
    return struct.unpack_from("=i", data, 7)[0]


class GroupErrors(logging.Handler):
    """Collects librdkafka's group-protocol log (debug=cgrp) and picks out the errors a
    live member must never get in a rebalance: UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION."""

    BAD = ("Unknown member", "generation id is not valid")

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.logger = logging.getLogger(f"strom-test-rdkafka-{name}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def conf(self) -> dict:
        return {"debug": "cgrp", "logger": self.logger}

    def bad(self) -> list[str]:
        return [line for line in self.lines if any(b in line for b in self.BAD)]

    def close(self) -> None:
        self.logger.removeHandler(self)
        super().close()


# -- membership and assignment -------------------------------------------------------------


def test_three_members_get_two_partitions_each_and_a_seventh_is_idle(gbroker, topic_name):
    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    log = GroupErrors(topic_name)
    members = [Consumer(cconf(bs, group, **{"client.id": f"m{i}"}, **log.conf()))
               for i in range(3)]
    adm = admin(bs)
    try:
        for c in members:
            c.subscribe([topic_name])
        poll_until(members, lambda: sorted(len(parts(c)) for c in members) == [2, 2, 2],
                   what="2 partitions each")
        owned = [parts(c) for c in members]
        assert set().union(*owned) == set(range(6))
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE,
                           what="Stable")
        assert len(d.members) == 3
        assert sorted(len(a) for a in assigned(d).values()) == [2, 2, 2]
        assert d.partition_assignor == "range"
        assert {m.client_id for m in d.members} == {"m0", "m1", "m2"}

        members += [Consumer(cconf(bs, group, **{"client.id": f"m{i}"}, **log.conf()))
                    for i in range(3, 7)]
        for c in members[3:]:
            c.subscribe([topic_name])
        poll_until(members, lambda: sorted(len(parts(c)) for c in members) == [0] + [1] * 6
                   and set().union(*(parts(c) for c in members)) == set(range(6)),
                   what="one partition each for six members, none for the seventh")
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE
                           and len(d.members) == 7, what="Stable with 7 members")
        assert sorted(len(a) for a in assigned(d).values()) == [0] + [1] * 6
        assert not log.bad(), log.bad()[:10]
    finally:
        close_all(members)
        log.close()
    d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.EMPTY, what="Empty")
    assert d.members == []


def test_killed_consumer_process_partitions_move_after_session_timeout(gbroker, topic_name):
    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    child = ChildConsumer(cconf(bs, group, **{"client.id": "doomed"}), topic_name)
    survivor = Consumer(cconf(bs, group, **{"client.id": "survivor"}))
    adm = admin(bs)
    try:
        survivor.subscribe([topic_name])
        poll_until([survivor], lambda: len(parts(survivor)) == 3 and len(child.current) == 3
                   and parts(survivor) | child.current == set(range(6)),
                   what="3 partitions each for the in-process and the child consumer")
        lost = child.current
        child.kill9()  # no LeaveGroup: the broker must notice the silence
        produce(bs, topic_name, 12, 6)
        seen: set[tuple[int, int]] = set()

        def sink(_c, msg):
            if msg.error() is None:
                seen.add((msg.partition(), msg.offset()))

        poll_until([survivor], lambda: parts(survivor) == set(range(6)),
                   what="the dead member's partitions move to the survivor", sink=sink)
        poll_until([survivor], lambda: {p for p, _ in seen} >= lost, sink=sink,
                   what="the dead member's partitions are consumed again")
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE,
                           what="Stable")
        assert [m.client_id for m in d.members] == ["survivor"]
        assert assigned(d) == {d.members[0].member_id: set(range(6))}
    finally:
        child.stop()
        close_all([survivor])


def test_close_moves_partitions_at_once(gbroker, topic_name):
    """close() sends LeaveGroup: the partitions move although the session timeout (60 s)
    is much longer than this test waits (20 s)."""
    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    a = Consumer(cconf(bs, group, **{"session.timeout.ms": 60000, "client.id": "stays"}))
    b = Consumer(cconf(bs, group, **{"session.timeout.ms": 60000, "client.id": "leaves"}))
    adm = admin(bs)
    try:
        for c in (a, b):
            c.subscribe([topic_name])
        poll_until([a, b], lambda: len(parts(a)) == 3 and len(parts(b)) == 3,
                   what="3 partitions each")
        b.close()
        poll_until([a], lambda: parts(a) == set(range(6)), timeout=20,
                   what="the leaving member's partitions move at once")
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE
                           and len(d.members) == 1, what="Stable with one member")
        assert d.members[0].client_id == "stays"
    finally:
        close_all([a, b])


def settle(consumer: Consumer) -> None:
    """Poll for ten heartbeat intervals: a rebalance under way (or one the broker wrongly
    started) reaches the member in that time."""
    end = time.monotonic() + 10 * HEARTBEAT_MS / 1000
    while time.monotonic() < end:
        consumer.poll(0.05)


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_static_member_restart_keeps_assignment_without_rebalance(gbroker, topic_name,
                                                                   strategy):
    """A static member (group.instance.id) killed with -9 and restarted within its session
    timeout gets its old partitions back; the other member sees no rebalance. (A restarted
    cooperative member's subscription differs: it owns nothing yet. That changes nothing.)
    With range the dynamic member leads the group; with cooperative-sticky the static one
    does, and comes back as the leader."""
    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    instance = f"static-{topic_name}"
    strat = {"partition.assignment.strategy": strategy}
    child_conf = cconf(bs, group, **{"group.instance.id": instance, "session.timeout.ms": 30000,
                                     "client.id": "static", **strat})
    events: list[str] = []
    other = Consumer(cconf(bs, group, **{"client.id": "dynamic", **strat}))
    adm = admin(bs)
    child = ChildConsumer(child_conf, topic_name)
    restarted = None
    static_leads = strategy == "cooperative-sticky"
    try:
        if static_leads:  # the first member is the leader
            poll_until([], lambda: len(child.current) == 6, what="the static member owns all")
        other.subscribe([topic_name], on_assign=lambda c, ps: events.append("assign"),
                        on_revoke=lambda c, ps: events.append("revoke"),
                        on_lost=lambda c, ps: events.append("lost"))
        poll_until([other], lambda: len(parts(other)) == 3 and len(child.current) == 3
                   and parts(other) | child.current == set(range(6)),
                   what="3 partitions each")
        settle(other)
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE,
                           what="Stable")
        old_static = [m for m in d.members if m.group_instance_id == instance]
        assert len(old_static) == 1
        before = (generation(other), parts(other), list(events))
        static_parts = child.current

        child.kill9()
        restarted = ChildConsumer(child_conf, topic_name)
        poll_until([other], lambda: restarted.current == static_parts,
                   what="the restarted static member gets its old partitions")
        settle(other)
        assert (generation(other), parts(other), events) == before, \
            "the restart of a static member caused a rebalance"
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE,
                           what="Stable")
        static = [m for m in d.members if m.group_instance_id == instance]
        assert len(d.members) == 2 and len(static) == 1
        assert static[0].member_id != old_static[0].member_id  # a new member id, same place
        assert assigned(d)[static[0].member_id] == static_parts
    finally:
        child.stop()
        if restarted is not None:
            restarted.stop()
        close_all([other])


def test_static_leader_restart_with_aiokafka(gbroker, topic_name):
    """aiokafka: a static member leads the group, stops (a static member sends no
    LeaveGroup) and starts again with the same group_instance_id: it gets its partitions
    back and the group stays in the same generation."""
    from aiokafka import AIOKafkaConsumer

    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"

    def consumer(instance, client_id):
        return AIOKafkaConsumer(topic_name, bootstrap_servers=bs, group_id=group,
                                client_id=client_id, group_instance_id=instance,
                                session_timeout_ms=30000, heartbeat_interval_ms=HEARTBEAT_MS,
                                auto_offset_reset="earliest", enable_auto_commit=False)

    async def until(cond, what):
        deadline = time.monotonic() + 30
        while not cond():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    def owned(c):
        return {tp.partition for tp in c.assignment()}

    async def main():
        static = consumer(f"static-{topic_name}", "static")
        await static.start()
        other = None
        try:
            await until(lambda: len(owned(static)) == 6, "the static member owns all")
            other = consumer(None, "dynamic")
            await other.start()
            await until(lambda: len(owned(static)) == 3 and len(owned(other)) == 3,
                        "3 partitions each")
            before = (other._coordinator.generation, owned(other), owned(static))
            await static.stop()
            static = consumer(f"static-{topic_name}", "static-again")
            await static.start()
            await until(lambda: owned(static) == before[2], "the old partitions come back")
            await asyncio.sleep(10 * HEARTBEAT_MS / 1000)  # a rebalance would show by now
            assert (other._coordinator.generation, owned(other), owned(static)) == before
        finally:
            await static.stop()
            if other is not None:
                await other.stop()

    asyncio.run(asyncio.wait_for(main(), 90))


def test_max_poll_interval_exceeded_removes_member(gbroker, topic_name):
    """A consumer that stops polling for longer than max.poll.interval.ms loses its
    partitions to the others. (librdkafka notices this itself and leaves the group; the
    broker's side, removing a member that does not rejoin within its rebalance timeout, is
    tested with raw requests in test_group_bad_input.py.)"""
    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    slow = Consumer(cconf(bs, group, **{"max.poll.interval.ms": SESSION_MS + 1000,
                                        "client.id": "slow"}))
    busy = Consumer(cconf(bs, group, **{"client.id": "busy"}))
    adm = admin(bs)
    try:
        for c in (slow, busy):
            c.subscribe([topic_name])
        poll_until([slow, busy], lambda: len(parts(slow)) == 3 and len(parts(busy)) == 3,
                   what="3 partitions each")
        # `slow` stops polling ("long processing"); only `busy` is polled.
        poll_until([busy], lambda: parts(busy) == set(range(6)),
                   what="the slow member's partitions move to the other member")
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE
                           and len(d.members) == 1, what="Stable with one member")
        assert d.members[0].client_id == "busy"
        # When it polls again, the slow consumer learns that it was thrown out.
        deadline = time.monotonic() + 10
        codes = []
        while time.monotonic() < deadline:
            msg = slow.poll(0.2)
            if msg is not None and msg.error() is not None:
                codes.append(msg.error().code())
                break
        assert KafkaError._MAX_POLL_EXCEEDED in codes
    finally:
        close_all([slow, busy])


def test_cooperative_sticky_confluent(gbroker, topic_name):
    """Incremental rebalances: members only give up the partitions that move, nobody is
    ever told its partitions were lost (no UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION for a
    live member), and survivors keep what they had."""
    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    events: dict[int, list[tuple[str, set[int]]]] = {}
    members: list[Consumer] = []
    log = GroupErrors(topic_name)

    def add(i: int) -> Consumer:
        c = Consumer(cconf(bs, group, **{"partition.assignment.strategy": "cooperative-sticky",
                                         "client.id": f"coop{i}"}, **log.conf()))
        events[i] = []

        def record(kind):
            return lambda _c, ps: events[i].append((kind, {tp.partition for tp in ps}))

        c.subscribe([topic_name], on_assign=record("assign"), on_revoke=record("revoke"),
                    on_lost=record("lost"))
        members.append(c)
        return c

    def balanced(cs, sizes):
        return lambda: sorted(len(parts(c)) for c in cs) == sizes and \
            set().union(*(parts(c) for c in cs)) == set(range(6))

    adm = admin(bs)
    try:
        c0 = add(0)
        poll_until(members, balanced(members, [6]), what="one member owns all")
        c1 = add(1)
        poll_until(members, balanced(members, [3, 3]), what="3 and 3")
        # c0 gave up exactly the three partitions that moved, and never everything at once.
        revoked0 = [ps for kind, ps in events[0] if kind == "revoke"]
        assert revoked0 and all(len(ps) < 6 for ps in revoked0), events[0]
        assert set().union(*revoked0) == parts(c1)
        step = {id(c): parts(c) for c in members}
        add(2)
        poll_until(members, balanced(members, [2, 2, 2]), what="2 each")
        for c in (c0, c1):
            assert parts(c) <= step[id(c)], "an existing member got a partition it did not own"
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE
                           and len(d.members) == 3, what="Stable with 3")
        assert d.partition_assignor == "cooperative-sticky"
        step = {id(c): parts(c) for c in members}
        c1.close()
        rest = [c for c in members if c is not c1]
        poll_until(rest, balanced(rest, [3, 3]), what="3 and 3 after a member left")
        for c in rest:
            assert parts(c) >= step[id(c)], "a survivor lost a partition it owned"
        assert all(kind != "lost" for evs in events.values() for kind, _ in evs), events
        assert not log.bad(), log.bad()[:10]
    finally:
        close_all(members)
        log.close()


def _kafka_python_members(bs, group, topic, n, stop, **conf):
    from kafka import KafkaConsumer

    consumers = [KafkaConsumer(bootstrap_servers=bs, group_id=group, client_id=f"kp{i}",
                               session_timeout_ms=10000, heartbeat_interval_ms=HEARTBEAT_MS,
                               auto_offset_reset="earliest", enable_auto_commit=False, **conf)
                 for i in range(n)]
    records: list[tuple[int, int, bytes]] = []
    lock = threading.Lock()

    def run(c):
        c.subscribe([topic])
        deadline = time.monotonic() + 90
        while not stop.is_set() and time.monotonic() < deadline:
            for tp, msgs in c.poll(timeout_ms=100).items():
                with lock:
                    records.extend((tp.partition, m.offset, m.value) for m in msgs)
        c.close()

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in consumers]
    for t in threads:
        t.start()
    return consumers, threads, records


@pytest.mark.parametrize("strategy", ["default", "cooperative-sticky"])
def test_kafka_python_group(gbroker, topic_name, strategy):
    extra = {}
    if strategy == "cooperative-sticky":
        try:
            from kafka.coordinator.assignors.cooperative_sticky import (
                CooperativeStickyAssignor as Coop,
            )
        except ImportError:  # pragma: no cover - depends on the kafka-python release
            pytest.skip("this kafka-python has no cooperative-sticky assignor")
        extra["partition_assignment_strategy"] = [Coop]
    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    stop = threading.Event()
    consumers, threads, records = _kafka_python_members(bs, group, topic_name, 3, stop, **extra)
    adm = admin(bs)
    try:
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE
                           and sorted(len(a) for a in assigned(d).values()) == [2, 2, 2],
                           timeout=40, what="Stable, 2 partitions each")
        expected = "range" if strategy == "default" else "cooperative-sticky"
        assert d.partition_assignor == expected
        produce(bs, topic_name, 60, 6)  # after the last rebalance: nothing is committed
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(records) < 60:
            time.sleep(0.1)
        # Every record was read. (Nothing is committed here: were a member's session to
        # expire on a loaded machine, its partitions' next owner would read them again.
        # Exactly-once processing is the subject of test_exactly_once_processing_....)
        assert {r[2] for r in records} == {f"v{i}".encode() for i in range(60)}
        assert set().union(*assigned(d).values()) == set(range(6))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
    wait_described(adm, group, lambda d: d.state == ConsumerGroupState.EMPTY, what="Empty")


def test_aiokafka_group_default_assignor(gbroker, topic_name):
    from aiokafka import AIOKafkaConsumer

    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    adm = admin(bs)

    async def main():
        consumers = [AIOKafkaConsumer(topic_name, bootstrap_servers=bs, group_id=group,
                                      client_id=f"aio{i}", session_timeout_ms=10000,
                                      heartbeat_interval_ms=HEARTBEAT_MS,
                                      auto_offset_reset="earliest", enable_auto_commit=False)
                     for i in range(3)]
        got: list[bytes] = []
        try:
            for c in consumers:
                await c.start()
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                sizes = sorted(len(c.assignment()) for c in consumers)
                if sizes == [2, 2, 2]:
                    break
                await asyncio.sleep(0.1)
            assert sorted(len(c.assignment()) for c in consumers) == [2, 2, 2]
            d = await asyncio.to_thread(
                wait_described, adm, group,
                lambda d: d.state == ConsumerGroupState.STABLE and len(d.members) == 3,
                what="Stable with 3")
            assert d.partition_assignor == "roundrobin"
            # produced after the last rebalance: nothing is committed
            await asyncio.to_thread(produce, bs, topic_name, 60, 6)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(got) < 60:
                for c in consumers:
                    batch = await c.getmany(timeout_ms=50)
                    for msgs in batch.values():
                        got.extend(m.value for m in msgs)
            assert set(got) == {f"v{i}".encode() for i in range(60)}  # see kafka-python's
        finally:
            for c in consumers:
                await c.stop()

    asyncio.run(asyncio.wait_for(main(), 90))
    wait_described(adm, group, lambda d: d.state == ConsumerGroupState.EMPTY, what="Empty")


def test_mixed_clients_in_one_group_with_range(gbroker, topic_name):
    """confluent-kafka, kafka-python and aiokafka in one group agree on `range`; each gets
    two adjacent partitions and together they read every record once."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor as AioRange
    from kafka import KafkaConsumer
    from kafka.coordinator.assignors.range import RangePartitionAssignor as KpRange

    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    stop = threading.Event()
    lock = threading.Lock()
    got: dict[str, list[tuple[int, int]]] = {"confluent": [], "kafka-python": [], "aiokafka": []}
    owned: dict[str, set[int]] = {"confluent": set(), "kafka-python": set(), "aiokafka": set()}

    def kafka_python():
        c = KafkaConsumer(bootstrap_servers=bs, group_id=group, client_id="kafka-python",
                          session_timeout_ms=10000, heartbeat_interval_ms=HEARTBEAT_MS,
                          auto_offset_reset="earliest", enable_auto_commit=False,
                          partition_assignment_strategy=[KpRange])
        c.subscribe([topic_name])
        deadline = time.monotonic() + 90
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                batch = c.poll(timeout_ms=100)
                with lock:
                    owned["kafka-python"] = {tp.partition for tp in c.assignment()}
                    for tp, msgs in batch.items():
                        got["kafka-python"].extend((tp.partition, m.offset) for m in msgs)
        finally:
            c.close()

    def aiokafka():
        async def run():
            c = AIOKafkaConsumer(topic_name, bootstrap_servers=bs, group_id=group,
                                 client_id="aiokafka", session_timeout_ms=10000,
                                 heartbeat_interval_ms=HEARTBEAT_MS,
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 partition_assignment_strategy=(AioRange,))
            await c.start()
            deadline = time.monotonic() + 90
            try:
                while not stop.is_set() and time.monotonic() < deadline:
                    batch = await c.getmany(timeout_ms=100)
                    with lock:
                        owned["aiokafka"] = {tp.partition for tp in c.assignment()}
                        for tp, msgs in batch.items():
                            got["aiokafka"].extend((tp.partition, m.offset) for m in msgs)
            finally:
                await c.stop()

        asyncio.run(run())

    threads = [threading.Thread(target=f, daemon=True) for f in (kafka_python, aiokafka)]
    for t in threads:
        t.start()
    c = Consumer(cconf(bs, group, **{"partition.assignment.strategy": "range",
                                     "client.id": "confluent", "session.timeout.ms": 10000}))
    adm = admin(bs)

    def sink(_c, msg):
        if msg.error() is None:
            with lock:
                got["confluent"].append((msg.partition(), msg.offset()))

    def balanced():
        with lock:
            owned["confluent"] = parts(c)
            return sorted(len(v) for v in owned.values()) == [2, 2, 2]

    def all_read():
        with lock:
            return sum(len(v) for v in got.values()) >= 60

    try:
        c.subscribe([topic_name])
        poll_until([c], balanced, timeout=60, sink=sink,
                   what="three clients with 2 partitions each")
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE
                           and len(d.members) == 3, what="Stable with 3")
        assert d.partition_assignor == "range"
        # Produced only now: nothing was committed, so a record read before the last
        # rebalance would be read again by the partition's next owner.
        gen = generation(c)
        produce(bs, topic_name, 60, 6)
        poll_until([c], all_read, timeout=30, sink=sink, what="60 records read")
        assert balanced()
        with lock:
            assert sorted(sorted(v) for v in owned.values()) == [[0, 1], [2, 3], [4, 5]]
            everything = [r for v in got.values() for r in v]
            assert set(everything) == {(i % 6, i // 6) for i in range(60)}
            if generation(c) == gen:  # no rebalance meanwhile (the usual case):
                # every record exactly once; each client read only its own partitions
                assert Counter(everything) == Counter((i % 6, i // 6) for i in range(60))
                for client, recs in got.items():
                    assert {p for p, _ in recs} <= owned[client], (client, recs, owned)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
        close_all([c])


# -- committed offsets ---------------------------------------------------------------------


def test_committed_offsets_keep_metadata_across_clients(gbroker, topic_name):
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATP
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    from kafka.structs import OffsetAndMetadata

    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 3)
    produce(bs, topic_name, 30, 3)
    group = f"g-{topic_name}"
    c = Consumer(cconf(bs, group))
    try:
        c.assign([TopicPartition(topic_name, p, 0) for p in range(3)])
        c.commit(offsets=[TopicPartition(topic_name, 0, 4, metadata="hello from confluent"),
                          TopicPartition(topic_name, 1, 7, metadata="")],
                 asynchronous=False)
        got = c.committed([TopicPartition(topic_name, p) for p in range(3)], timeout=10)
        assert [(tp.partition, tp.offset, tp.metadata) for tp in got] == \
            [(0, 4, "hello from confluent"), (1, 7, ""), (2, -1001, None)]
    finally:
        c.close()

    kp = KafkaConsumer(bootstrap_servers=bs, group_id=group, enable_auto_commit=False)
    try:
        om = kp.committed(KTP(topic_name, 0), metadata=True)
        # confluent-kafka sends the metadata string with its C NUL terminator (it sets
        # metadata_size to strlen + 1); kafka-python shows the bytes exactly as stored.
        assert (om.offset, om.metadata.rstrip("\x00")) == (4, "hello from confluent")
        kp.commit({KTP(topic_name, 2): OffsetAndMetadata(9, "ünïcode metadata ✓", -1)})
    finally:
        kp.close()

    async def aio_commit():
        a = AIOKafkaConsumer(bootstrap_servers=bs, group_id=group, enable_auto_commit=False)
        await a.start()
        try:
            a.assign([ATP(topic_name, 1)])
            await a.commit({ATP(topic_name, 1): (8, "from aiokafka")})
        finally:
            await a.stop()

    asyncio.run(asyncio.wait_for(aio_commit(), 30))

    # (confluent-kafka reads metadata as a NUL-terminated C string, so metadata written by
    # the other clients is read back with kafka-python, which shows it byte for byte.)
    kp = KafkaConsumer(bootstrap_servers=bs, group_id=group, enable_auto_commit=False)
    try:
        got = [kp.committed(KTP(topic_name, p), metadata=True) for p in (1, 2)]
        assert [(om.offset, om.metadata) for om in got] == \
            [(8, "from aiokafka"), (9, "ünïcode metadata ✓")]
    finally:
        kp.close()
    assert group_offsets(bs, group) == [(0, 4), (1, 8), (2, 9)]


def test_restarted_consumer_continues_where_the_last_commit_stopped(gbroker, topic_name):
    """confluent-kafka reads 4 records and commits; kafka-python continues at 4, reads 3 and
    commits; aiokafka continues at 7."""
    from aiokafka import AIOKafkaConsumer
    from kafka import KafkaConsumer

    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 1)
    produce(bs, topic_name, 10, 1)
    group = f"g-{topic_name}"

    c = Consumer(cconf(bs, group))
    first = []
    try:
        c.subscribe([topic_name])
        deadline = time.monotonic() + 30
        while len(first) < 4 and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and msg.error() is None:
                first.append(msg.value())
                c.commit(message=msg, asynchronous=False)
    finally:
        c.close()
    assert first == [b"v0", b"v1", b"v2", b"v3"]

    kp = KafkaConsumer(topic_name, bootstrap_servers=bs, group_id=group,
                       enable_auto_commit=False, auto_offset_reset="earliest",
                       session_timeout_ms=6000, heartbeat_interval_ms=HEARTBEAT_MS)
    second = []
    try:
        deadline = time.monotonic() + 30
        while len(second) < 3 and time.monotonic() < deadline:
            for msgs in kp.poll(timeout_ms=200, max_records=3 - len(second)).values():
                second.extend(m.value for m in msgs)
        kp.commit()
    finally:
        kp.close()
    assert second == [b"v4", b"v5", b"v6"]

    async def third():
        a = AIOKafkaConsumer(topic_name, bootstrap_servers=bs, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=6000, heartbeat_interval_ms=HEARTBEAT_MS)
        await a.start()
        try:
            msg = await asyncio.wait_for(a.getone(), 30)
            return msg.value
        finally:
            await a.stop()

    assert asyncio.run(third()) == b"v7"


def test_broker_restart_keeps_offsets_and_members_rejoin(start_broker, topic_name):
    b = start_broker(overrides=GROUP_OVERRIDES)
    bs = b.bootstrap
    create_topic(bs, topic_name, 4)
    produce(bs, topic_name, 40, 4)
    group = f"g-{topic_name}"
    members = [Consumer(cconf(bs, group, **{"client.id": f"r{i}"})) for i in range(2)]
    seen: list[tuple[int, int]] = []

    def sink(c, msg):
        if msg.error() is None:
            seen.append((msg.partition(), msg.offset()))
            c.commit(message=msg, asynchronous=False)

    try:
        for c in members:
            c.subscribe([topic_name])
        # both in the group: a member that joined after the records were read would
        # leave a rebalance open that the unpolled members never finish, and the
        # OffsetFetch below would wait behind the other's JoinGroup (as on Kafka)
        poll_until(members, lambda: len(seen) >= 40 and all(c.assignment() for c in members),
                   sink=sink, what="40 records read, both members assigned")
        committed_before = sorted(
            (tp.partition, tp.offset)
            for tp in members[0].committed([TopicPartition(topic_name, p) for p in range(4)],
                                           timeout=10))
        assert committed_before == [(p, 10) for p in range(4)]

        b.restart()  # SIGTERM, then start on the same log dir and port

        produce(bs, topic_name, 40, 4, start=40)
        poll_until(members, lambda: len(seen) >= 80, sink=sink, timeout=60,
                   what="the members read on after the broker restart")
        assert Counter(seen) == Counter((i % 4, i // 4) for i in range(80)), \
            "records were lost or read twice across the broker restart"
        adm = admin(bs)
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE
                           and len(d.members) == 2, what="Stable with both members")
        assert {m.client_id for m in d.members} == {"r0", "r1"}
        assert set().union(*assigned(d).values()) == set(range(4))
    finally:
        close_all(members)

    # After a crash (kill -9) the committed offsets are still there; a deleted group stays
    # deleted.
    b.restart(crash=True)
    assert group_offsets(bs, group) == [(p, 20) for p in range(4)]
    adm = admin(bs)
    adm.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    b.restart(crash=True)
    assert group_offsets(bs, group) == []
    assert describe(admin(bs), group).state == ConsumerGroupState.DEAD  # a new connection


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_exactly_once_processing_across_two_rebalances(gbroker, topic_name, strategy):
    """Auto-commit off, a synchronous commit after every processed batch, three members and
    two rebalances (a member joins, another leaves): every record is processed, none twice.

    With cooperative-sticky the members keep consuming during a rebalance, so a commit can
    race with it: it meets REBALANCE_IN_PROGRESS (the group is between JoinGroup and
    SyncGroup) or ILLEGAL_GENERATION (the broker completed the join a moment before the
    client read its JoinGroup response), exactly as from Kafka. The member retries the
    commit, as applications do, before it polls again (which is when it could give up a
    partition)."""
    bs = gbroker.bootstrap
    n_parts, total = 6, 1800
    create_topic(bs, topic_name, n_parts)
    group = f"g-{topic_name}"
    run = process_across_rebalances(
        bs, topic_name, group,
        lambda name: cconf(bs, group, **{"client.id": name, "session.timeout.ms": 6000,
                                         "partition.assignment.strategy": strategy}),
        retryable=(KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION),
        partitions=n_parts, total=total)
    assert not run.failures, run.failures
    if strategy == "range":
        # Eager: a member rejoins only after it gave up its partitions in poll(), after its
        # last commit; the old generation lasts until then, so no commit can fail.
        assert not run.retries, run.retries
    twice = run.twice()
    assert not twice, f"processed twice: {dict(list(twice.items())[:20])}\n{run.events_text()}"
    assert {(p, o) for _, p, o in run.processed} == \
        {(p, o) for p in range(n_parts) for o in range(total // n_parts)}
    assert run.count("B") > 0 and run.count("C") > 0 and run.count("A") > 0
    assert group_offsets(bs, group) == \
        [(p, total // n_parts) for p in range(n_parts)]


# -- AdminClient ---------------------------------------------------------------------------


def test_admin_list_describe_delete_groups_and_offsets(gbroker, topic_name):
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP
    from kafka import errors as kerrors

    bs = gbroker.bootstrap
    create_topic(bs, topic_name, 3)
    group = f"g-{topic_name}"
    adm = admin(bs)
    kadm = KafkaAdminClient(bootstrap_servers=bs)
    c = Consumer(cconf(bs, group, **{"client.id": "admin-test"}))
    try:
        c.subscribe([topic_name])
        poll_until([c], lambda: parts(c) == {0, 1, 2}, what="assigned")
        c.commit(offsets=[TopicPartition(topic_name, 0, 1)], asynchronous=False)

        def listed(**kw):
            res = adm.list_consumer_groups(request_timeout=10, **kw).result(timeout=15)
            assert not res.errors, res.errors
            return {g.group_id: g for g in res.valid}

        everything = listed()
        assert everything[group].state == ConsumerGroupState.STABLE
        assert not everything[group].is_simple_consumer_group
        assert group in listed(states={ConsumerGroupState.STABLE})
        assert group not in listed(states={ConsumerGroupState.EMPTY})

        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE,
                           what="Stable")
        assert d.group_id == group and not d.is_simple_consumer_group
        assert d.partition_assignor == "range"
        assert d.coordinator.id == gbroker.node_id
        [m] = d.members
        assert m.client_id == "admin-test" and m.host and m.member_id
        assert sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions) == \
            [(topic_name, p) for p in range(3)]

        # Deleting an active group fails; so do changing its offsets and deleting offsets of
        # a topic it subscribes to.
        with pytest.raises(KafkaException) as ei:
            adm.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        assert ei.value.args[0].code() == KafkaError.NON_EMPTY_GROUP
        # confluent-kafka's AdminClient has no OffsetDelete: kafka-python's does.
        res = kadm.delete_group_offsets(group, [KTP(topic_name, 0)])
        assert res == {KTP(topic_name, 0): kerrors.GroupSubscribedToTopicError}
        res = adm.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, [TopicPartition(topic_name, 0, 2)])],
            request_timeout=10)[group]
        try:
            errors = [tp.error.code() for tp in res.result(timeout=15).topic_partitions]
        except KafkaException as e:
            errors = [e.args[0].code()]
        assert errors == [KafkaError.UNKNOWN_MEMBER_ID]
    finally:
        c.close()

    wait_described(adm, group, lambda d: d.state == ConsumerGroupState.EMPTY and not d.members,
                   what="Empty")
    empty = adm.list_consumer_groups(states={ConsumerGroupState.EMPTY},
                                     request_timeout=10).result(timeout=15)
    assert group in {g.group_id for g in empty.valid}

    # A group that only ever had offsets committed for it (no members: a "simple" consumer
    # group) is listed too.
    simple = f"simple-{group}"
    res = adm.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
        simple, [TopicPartition(topic_name, 1, 3)])], request_timeout=10)[simple].result(timeout=15)
    assert [tp.error for tp in res.topic_partitions] == [None]
    listed_simple = [g for g in adm.list_consumer_groups(request_timeout=10).result(timeout=15)
                     .valid if g.group_id == simple]
    assert [(g.is_simple_consumer_group, g.state) for g in listed_simple] == \
        [(True, ConsumerGroupState.EMPTY)]

    # Offsets of an empty group can be changed and listed...
    res = adm.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic_name, 0, 5), TopicPartition(topic_name, 2, 8)])],
        request_timeout=10)[group].result(timeout=15)
    assert all(tp.error is None for tp in res.topic_partitions), res.topic_partitions
    res = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic_name, p) for p in range(3)])])[group].result(timeout=15)
    assert [(tp.partition, tp.offset) for tp in res.topic_partitions] == \
        [(0, 5), (1, -1001), (2, 8)]
    # ... and deleted.
    res = kadm.delete_group_offsets(group, [KTP(topic_name, 0)])
    assert res == {KTP(topic_name, 0): kerrors.NoError}
    res = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group] \
        .result(timeout=15)
    assert [(tp.partition, tp.offset) for tp in res.topic_partitions] == [(2, 8)]

    adm.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    d = describe(adm, group)
    assert d.state == ConsumerGroupState.DEAD and not d.members
    assert group not in {g.group_id for g in adm.list_consumer_groups(
        request_timeout=10).result(timeout=15).valid}
    with pytest.raises(KafkaException) as ei:
        adm.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    assert ei.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND
    # The deleted group's offsets are gone: a new member starts from auto.offset.reset.
    res = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group] \
        .result(timeout=15)
    assert res.topic_partitions == []
    kadm.close()


# -- the console consumer ------------------------------------------------------------------


def test_console_consumer_with_group_commits(gbroker, topic_name):
    """`strom consume --group` joins a group and commits: a second run continues."""
    from test_cli import consume_lines, create, ok, strom

    create(gbroker, topic_name)
    ok(strom(gbroker, "produce", "--topic", topic_name, stdin="one\ntwo\nthree\n"))
    group = f"g-{topic_name}"
    first = consume_lines(gbroker, topic_name, 2, "--group", group, "--from-beginning")
    assert first == ["one", "two"]
    assert consume_lines(gbroker, topic_name, 1, "--group", group) == ["three"]
    assert group_offsets(gbroker.bootstrap, group) == [(0, 3)]
