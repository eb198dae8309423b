"""The consumer group protocol of KIP-848 (issue 4, point 5) with real clients.

librdkafka consumers with `group.protocol=consumer` form groups through
ConsumerGroupHeartbeat, with the broker's `uniform` (default) and `range` assignors; members
that leave (close()) or die (kill -9 of a consumer process) give up their partitions; with
commits after processing every record is processed once across rebalances; committed
offsets survive a broker restart (members, kept in memory only, join again after
UNKNOWN_MEMBER_ID); the AdminClient describes (ConsumerGroupDescribe) and lists the group.
Raw ConsumerGroupHeartbeat requests, encoded here by hand, check the error codes for bad
input, and a classic member cannot join a group of the new protocol.

The broker runs with group.consumer.heartbeat.interval.ms=500 and
group.consumer.session.timeout.ms=6000 so groups form and dead members expire in seconds.
Every wait is bounded; nothing asserts how long something took. Where it matters whether a
member left or was expired, the broker's log says which.
"""

from __future__ import annotations

import functools
import struct
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupType,
    KafkaError,
    TopicCollection,
    TopicPartition,
)

from strom.testing import groups
from strom.testing.broker import BrokerProcess
from strom.testing.groups import (
    ChildConsumer,
    admin,
    assigned,
    close_all,
    commit_retrying,
    consumer_conf,
    describe,
    group_offsets,
    parts,
    process_across_rebalances,
    produce,
)
from strom.testing.kafka import create_topic
from strom.testing.wire import KafkaSocket, compact_string, i16, i32, request, string, uvarint

pytestmark = pytest.mark.timeout(180)

SESSION_MS = 6000
OVERRIDES = {
    "group.consumer.heartbeat.interval.ms": "500",
    "group.consumer.session.timeout.ms": str(SESSION_MS),
    "group.initial.rebalance.delay.ms": "0",
}

# Kafka error codes
NONE = 0
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
INCONSISTENT_GROUP_PROTOCOL = 23
UNKNOWN_MEMBER_ID = 25
INVALID_REQUEST = 42
FENCED_MEMBER_EPOCH = 110
UNSUPPORTED_ASSIGNOR = 112
STALE_MEMBER_EPOCH = 113
INVALID_REGULAR_EXPRESSION = 128


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker_overrides():
    """conftest's `module_broker` runs with short consumer-protocol heartbeats and sessions."""
    return OVERRIDES


@pytest.fixture(scope="module")
def cbroker(module_broker):
    return module_broker


# -- helpers -------------------------------------------------------------------------------


def cconf(bootstrap: str, group: str, **extra) -> dict:
    return consumer_conf(bootstrap, group, **{"group.protocol": "consumer", **extra})


poll_until = functools.partial(groups.poll_until, timeout=40.0)
wait_described = functools.partial(groups.wait_described, timeout=30.0)


def disjoint_cover(sets, n: int) -> bool:
    flat = [p for s in sets for p in s]
    return len(flat) == len(set(flat)) == n and set(flat) == set(range(n))


def balanced(consumers, sizes) -> bool:
    now = [parts(c) for c in consumers]
    return sorted(len(s) for s in now) == sorted(sizes) and disjoint_cover(now, sum(sizes))


def wait_log(broker: BrokerProcess, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = broker.log_text()
        if text in log:
            return log
        time.sleep(0.1)
    raise AssertionError(f"the broker never logged {text!r}")


# commits that race with an epoch change are retried (bounded), as applications do
RETRYABLE_COMMIT = (KafkaError.STALE_MEMBER_EPOCH, KafkaError.UNKNOWN_MEMBER_ID,
                    KafkaError.FENCED_MEMBER_EPOCH)


# -- membership and assignment -------------------------------------------------------------


@pytest.mark.parametrize("assignor", [None, "uniform", "range"])
def test_six_partitions_three_members_two_each(cbroker, topic_name, assignor):
    bs = cbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    extra = {"group.remote.assignor": assignor} if assignor else {}
    consumers = [Consumer(cconf(bs, group, **{"client.id": f"m{i}"}, **extra))
                 for i in range(3)]
    try:
        for c in consumers:
            c.subscribe([topic_name])
        poll_until(consumers, lambda: balanced(consumers, [2, 2, 2]), what="2 partitions each")
        d = wait_described(admin(bs), group, lambda d: d.state == ConsumerGroupState.STABLE,
                           what="Stable", consumers=consumers)
        assert d.type == ConsumerGroupType.CONSUMER
        assert d.partition_assignor == (assignor or "uniform")
        by_member = assigned(d)
        assert by_member == {c.memberid(): parts(c) for c in consumers}
        if assignor == "range":
            # contiguous ranges, in member id order
            ordered = [by_member[m] for m in sorted(by_member)]
            assert ordered == [{0, 1}, {2, 3}, {4, 5}]
    finally:
        close_all(consumers)


def test_seventh_member_is_idle_and_gets_partitions_when_one_leaves(cbroker, topic_name):
    bs = cbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    consumers = [Consumer(cconf(bs, group)) for _ in range(7)]
    try:
        for c in consumers:
            c.subscribe([topic_name])
        poll_until(consumers, lambda: balanced(consumers, [1] * 6 + [0]), what="1 each, one idle")
        busy = next(c for c in consumers if parts(c))
        busy.close()
        rest = [c for c in consumers if c is not busy]
        poll_until(rest, lambda: balanced(rest, [1] * 6), what="the idle member takes over")
    finally:
        close_all(consumers)


def test_member_leaving_gives_its_partitions_to_the_others(cbroker, topic_name):
    bs = cbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    consumers = [Consumer(cconf(bs, group)) for _ in range(3)]
    try:
        for c in consumers:
            c.subscribe([topic_name])
        poll_until(consumers, lambda: balanced(consumers, [2, 2, 2]), what="2 each")
        leaving = consumers[0]
        member_id = leaving.memberid()
        kept = {id(c): parts(c) for c in consumers[1:]}
        leaving.close()
        rest = consumers[1:]
        poll_until(rest, lambda: balanced(rest, [3, 3]), what="3 each after a close()")
        for c in rest:  # uniform is sticky: the others keep what they had
            assert kept[id(c)] <= parts(c)
        log = wait_log(cbroker, f"Member {member_id} left consumer group {group}")
        assert f"Member {member_id} removed from consumer group" not in log
    finally:
        close_all(consumers)


def test_killed_member_loses_its_partitions_after_the_session_timeout(cbroker, topic_name):
    bs = cbroker.bootstrap
    create_topic(bs, topic_name, 6)
    group = f"g-{topic_name}"
    consumers = [Consumer(cconf(bs, group)) for _ in range(2)]
    child = ChildConsumer(cconf(bs, group), topic_name)
    try:
        for c in consumers:
            c.subscribe([topic_name])
        poll_until(consumers, lambda: len(child.current) == 2
                   and disjoint_cover([parts(c) for c in consumers] + [child.current], 6),
                   what="2 each, with the child process")
        member_id = child.member_id
        assert member_id
        child.kill9()
        poll_until(consumers, lambda: balanced(consumers, [3, 3]),
                   timeout=SESSION_MS / 1000 + 40, what="the dead member's partitions moved")
        log = wait_log(cbroker, f"Member {member_id} removed from consumer group {group}: "
                                "its session timed out")
        assert f"Member {member_id} left consumer group" not in log
    finally:
        child.stop()
        close_all(consumers)


# -- processing and offsets ----------------------------------------------------------------


def test_every_record_processed_once_across_rebalances(cbroker, topic_name):
    """Auto-commit off, a synchronous commit after every processed batch, three members and
    two rebalances (a member joins, another leaves): every record is processed, none twice.
    A commit that races with an epoch change meets STALE_MEMBER_EPOCH and is retried before
    the member polls again (which is when it could give up a partition)."""
    bs = cbroker.bootstrap
    n_parts, total = 6, 1800
    create_topic(bs, topic_name, n_parts)
    group = f"g-{topic_name}"
    run = process_across_rebalances(
        bs, topic_name, group, lambda name: cconf(bs, group, **{"client.id": name}),
        retryable=RETRYABLE_COMMIT,
        partitions=n_parts, total=total)
    assert not run.failures, run.failures
    twice = run.twice()
    assert not twice, f"processed twice: {dict(list(twice.items())[:20])}\n{run.events_text()}"
    assert {(p, o) for _, p, o in run.processed} == \
        {(p, o) for p in range(n_parts) for o in range(total // n_parts)}
    assert run.count("A") > 0 and run.count("B") > 0 and run.count("C") > 0
    assert group_offsets(bs, group) == [(p, total // n_parts) for p in range(n_parts)]


def test_committed_offsets_survive_a_broker_restart(start_broker, topic_name):
    b = start_broker(overrides=OVERRIDES)
    bs = b.bootstrap
    create_topic(bs, topic_name, 4)
    produce(bs, topic_name, 40, 4)
    group = f"g-{topic_name}"
    consumers = [Consumer(cconf(bs, group, **{"client.id": f"r{i}"})) for i in range(2)]
    seen: list[tuple[int, int]] = []
    failures: list[str] = []
    retries: list = []

    def sink(c, msg):
        if msg.error() is None:
            seen.append((msg.partition(), msg.offset()))
            err = commit_retrying(c, [TopicPartition(topic_name, msg.partition(),
                                                     msg.offset() + 1)], RETRYABLE_COMMIT,
                                  retries)
            if err:
                failures.append(err)

    adm = admin(bs)
    try:
        for c in consumers:
            c.subscribe([topic_name])
        poll_until(consumers, lambda: len(seen) >= 40, sink=sink, what="40 records read")
        assert group_offsets(bs, group) == [(p, 10) for p in range(4)]

        b.restart()  # SIGTERM, then start on the same log dir and port

        # the members find they are unknown (membership is not persisted: UNKNOWN_MEMBER_ID),
        # join again, and own everything between them before more records arrive
        def back() -> bool:
            joined = b.log_text(current_run_only=True).count(f"joined consumer group {group}")
            return joined >= 2 and disjoint_cover([parts(c) for c in consumers], 4) \
                and all(parts(c) for c in consumers)

        poll_until(consumers, back, sink=sink, timeout=60,
                   what="both members back after the broker restart")
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE
                           and len(d.members) == 2, what="Stable with both members",
                           consumers=consumers, sink=sink)
        assert d.type == ConsumerGroupType.CONSUMER
        assert {m.client_id for m in d.members} == {"r0", "r1"}
        assert set().union(*assigned(d).values()) == set(range(4))

        produce(bs, topic_name, 40, 4, start=40)
        poll_until(consumers, lambda: len(seen) >= 80, sink=sink, timeout=60,
                   what="the members read on after the broker restart")
        assert not failures, failures
        assert Counter(seen) == Counter((i % 4, i // 4) for i in range(80)), \
            "records were lost or read twice across the broker restart"
        assert group_offsets(bs, group) == [(p, 20) for p in range(4)]
    finally:
        close_all(consumers)
    b.restart(crash=True)
    assert group_offsets(bs, group) == [(p, 20) for p in range(4)]


# -- AdminClient ---------------------------------------------------------------------------


def test_admin_describe_and_list(cbroker, topic_name):
    bs = cbroker.bootstrap
    create_topic(bs, topic_name, 5)
    group = f"g-{topic_name}"
    adm = admin(bs)
    consumers = [Consumer(cconf(bs, group, **{"client.id": f"desc-{i}",
                                             "group.remote.assignor": "range"}))
                 for i in range(2)]
    try:
        for c in consumers:
            c.subscribe([topic_name])
        poll_until(consumers, lambda: balanced(consumers, [3, 2]), what="3 + 2")
        d = wait_described(adm, group, lambda d: d.state == ConsumerGroupState.STABLE,
                           what="Stable", consumers=consumers)
        assert d.group_id == group
        assert d.type == ConsumerGroupType.CONSUMER
        assert d.partition_assignor == "range"
        assert not d.is_simple_consumer_group
        assert d.coordinator.id == cbroker.node_id
        assert {m.client_id for m in d.members} == {"desc-0", "desc-1"}
        assert {m.member_id for m in d.members} == {c.memberid() for c in consumers}
        for m in d.members:
            assert m.host  # "/127.0.0.1", as Kafka shows it
            assert {tp.topic for tp in m.assignment.topic_partitions} == {topic_name}
            assert m.target_assignment is not None
            assert {(tp.topic, tp.partition) for tp in m.target_assignment.topic_partitions} \
                == {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions}
        by_member = assigned(d)
        assert [by_member[m] for m in sorted(by_member)] == [{0, 1, 2}, {3, 4}]

        listed = adm.list_consumer_groups(request_timeout=10).result(timeout=15)
        mine = [g for g in listed.valid if g.group_id == group]
        assert len(mine) == 1, listed.valid
        assert mine[0].type == ConsumerGroupType.CONSUMER
        assert mine[0].state == ConsumerGroupState.STABLE
        assert not mine[0].is_simple_consumer_group
        only_consumer = adm.list_consumer_groups(
            types={ConsumerGroupType.CONSUMER}, request_timeout=10).result(timeout=15)
        assert group in {g.group_id for g in only_consumer.valid}
        only_classic = adm.list_consumer_groups(
            types={ConsumerGroupType.CLASSIC}, request_timeout=10).result(timeout=15)
        assert group not in {g.group_id for g in only_classic.valid}
        only_stable = adm.list_consumer_groups(
            states={ConsumerGroupState.STABLE}, request_timeout=10).result(timeout=15)
        assert group in {g.group_id for g in only_stable.valid}
    finally:
        close_all(consumers)
    d = wait_described(adm, group, lambda d: not d.members, what="empty")
    assert d.state == ConsumerGroupState.EMPTY
    assert d.type == ConsumerGroupType.CONSUMER


# -- raw ConsumerGroupHeartbeat ------------------------------------------------------------


def _nullable_array(items, enc) -> bytes:
    if items is None:
        return uvarint(0)
    return uvarint(len(items) + 1) + b"".join(enc(x) for x in items)


def cgh_request(group: str, member_id: str, epoch: int, *, topics=None, regex=None,
                assignor=None, owned=None, rebalance_ms: int = 30000,
                instance_id: str | None = None, version: int = 0, cid: int = 1) -> bytes:
    """ConsumerGroupHeartbeat (key 68) v0/v1, header v2; `owned` is {topic_id: [p...]}."""
    def tp(item):
        topic_id, ps = item
        return (topic_id.bytes + uvarint(len(ps) + 1) + b"".join(i32(p) for p in ps)
                + uvarint(0))

    body = (compact_string(group) + compact_string(member_id) + i32(epoch)
            + compact_string(instance_id) + compact_string(None) + i32(rebalance_ms)
            + _nullable_array(topics, compact_string))
    if version >= 1:
        body += compact_string(regex)
    body += compact_string(assignor)
    body += _nullable_array(None if owned is None else list(owned.items()), tp)
    body += uvarint(0)
    return request(68, version, cid, body, header_version=2)


class Buf:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def uvarint(self) -> int:
        shift = out = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            out |= (b & 0x7F) << shift
            if not b & 0x80:
                return out
            shift += 7

    def compact_string(self) -> str | None:
        n = self.uvarint()
        if n == 0:
            return None
        s = self.data[self.pos:self.pos + n - 1].decode()
        self.pos += n - 1
        return s

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.pos += self.uvarint()


def parse_cgh(payload: bytes, cid: int = 1) -> dict:
    r = Buf(payload)
    assert r.take(">i") == cid
    r.skip_tags()  # response header v1
    out = {"throttle": r.take(">i"), "error": r.take(">h"), "message": r.compact_string(),
           "member_id": r.compact_string(), "epoch": r.take(">i"),
           "interval": r.take(">i"), "assignment": None}
    if r.take(">b") >= 0:
        assignment = {}
        for _ in range(r.uvarint() - 1):
            topic_id = uuid.UUID(bytes=r.data[r.pos:r.pos + 16])
            r.pos += 16
            assignment[topic_id] = [r.take(">i") for _ in range(r.uvarint() - 1)]
            r.skip_tags()
        r.skip_tags()
        out["assignment"] = assignment
    r.skip_tags()
    assert r.pos == len(payload), "trailing bytes in the response"
    return out


class RawCGH:
    def __init__(self, broker: BrokerProcess) -> None:
        self.sock = KafkaSocket("127.0.0.1", broker.port, timeout=15)
        self.cid = 0

    def heartbeat(self, group: str, member_id: str, epoch: int, **kw) -> dict:
        self.cid += 1
        payload = self.sock.roundtrip(cgh_request(group, member_id, epoch, cid=self.cid, **kw))
        return parse_cgh(payload, self.cid)

    def find_coordinator(self, group: str) -> None:
        """FindCoordinator v0 (creates __consumer_offsets on first use) until it answers."""
        deadline = time.monotonic() + 20
        code = None
        while time.monotonic() < deadline:
            self.cid += 1
            payload = self.sock.roundtrip(request(10, 0, self.cid, string(group)))
            r = Buf(payload)
            assert r.take(">i") == self.cid
            code = r.take(">h")
            if code == NONE:
                return
            time.sleep(0.1)
        raise AssertionError(f"FindCoordinator kept failing: {code}")

    def join(self, group: str, member_id: str, **kw) -> dict:
        """A join (epoch 0), retried while the coordinator is loading."""
        self.find_coordinator(group)
        deadline = time.monotonic() + 20
        while True:
            r = self.heartbeat(group, member_id, 0, **kw)
            if r["error"] not in (COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE,
                                  NOT_COORDINATOR) or time.monotonic() > deadline:
                return r
            time.sleep(0.1)

    def join_group_classic(self, group: str, topic: str) -> int:
        """JoinGroup v5 (header v1) of a classic consumer; returns the error code."""
        meta = struct.pack(">hi", 0, 1) + string(topic) + struct.pack(">i", -1)
        body = (string(group) + i32(10000) + i32(10000) + string("") + i16(-1)
                + string("consumer") + i32(1) + string("range") + i32(len(meta)) + meta)
        self.cid += 1
        r = Buf(self.sock.roundtrip(request(11, 5, self.cid, body)))
        assert r.take(">i") == self.cid
        r.take(">i")  # throttle
        return r.take(">h")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(cbroker):
    r = RawCGH(cbroker)
    yield r
    r.close()


def topic_id_of(bootstrap: str, topic: str) -> uuid.UUID:
    adm = admin(bootstrap)
    desc = adm.describe_topics(TopicCollection([topic]), request_timeout=10)[topic].result(
        timeout=15)
    tid = desc.topic_id
    return uuid.UUID(int=((tid.get_most_significant_bits() & (2**64 - 1)) << 64)
                     | (tid.get_least_significant_bits() & (2**64 - 1)))


@pytest.mark.parametrize("version", [0, 1])
def test_raw_join_heartbeat_leave(cbroker, raw, topic_name, version):
    create_topic(cbroker.bootstrap, topic_name, 3)
    group = f"g-{topic_name}"
    member = uuid.uuid4().hex
    r = raw.join(group, member, topics=[topic_name], version=version)
    assert r["error"] == NONE, r
    assert r["member_id"] == member
    assert r["epoch"] > 0
    assert r["interval"] == 500  # group.consumer.heartbeat.interval.ms
    [(topic_id, ps)] = r["assignment"].items()
    assert sorted(ps) == [0, 1, 2]
    assert topic_id == topic_id_of(cbroker.bootstrap, topic_name)
    # a plain heartbeat (nothing changed: all fields null) keeps the epoch
    again = raw.heartbeat(group, member, r["epoch"], rebalance_ms=-1, version=version)
    assert again["error"] == NONE and again["epoch"] == r["epoch"], again
    owned = raw.heartbeat(group, member, r["epoch"], owned={topic_id: [0, 1, 2]},
                          version=version)
    assert owned["error"] == NONE and owned["epoch"] == r["epoch"], owned
    left = raw.heartbeat(group, member, -1, version=version)
    assert left["error"] == NONE and left["epoch"] == -1, left
    # gone: its old epoch is now unknown
    after = raw.heartbeat(group, member, r["epoch"], version=version)
    assert after["error"] == UNKNOWN_MEMBER_ID, after


def test_raw_unknown_server_assignor(cbroker, raw, topic_name):
    create_topic(cbroker.bootstrap, topic_name, 1)
    group = f"g-{topic_name}"
    r = raw.join(group, uuid.uuid4().hex, topics=[topic_name], assignor="sticky-nonsense")
    assert r["error"] == UNSUPPORTED_ASSIGNOR, r
    assert r["message"] and "sticky-nonsense" in r["message"]
    assert r["member_id"] is None and r["epoch"] == -1 and r["assignment"] is None
    ok = raw.join(group, uuid.uuid4().hex, topics=[topic_name], assignor="range")
    assert ok["error"] == NONE, ok


def test_raw_wrong_member_epoch_is_fenced(cbroker, raw, topic_name):
    create_topic(cbroker.bootstrap, topic_name, 2)
    group = f"g-{topic_name}"
    member = uuid.uuid4().hex
    r = raw.join(group, member, topics=[topic_name])
    assert r["error"] == NONE, r
    for wrong in (r["epoch"] + 1, r["epoch"] + 100):
        fenced = raw.heartbeat(group, member, wrong)
        assert fenced["error"] == FENCED_MEMBER_EPOCH, fenced
    # the member itself is untouched by a fenced request
    ok = raw.heartbeat(group, member, r["epoch"])
    assert ok["error"] == NONE and ok["epoch"] == r["epoch"], ok


def test_raw_unknown_member(cbroker, raw, topic_name):
    create_topic(cbroker.bootstrap, topic_name, 1)
    group = f"g-{topic_name}"
    # in a group that does not exist
    raw.find_coordinator(group)
    r = raw.heartbeat(group, uuid.uuid4().hex, 5)
    assert r["error"] == UNKNOWN_MEMBER_ID, r
    # and in one that does
    assert raw.join(group, uuid.uuid4().hex, topics=[topic_name])["error"] == NONE
    r = raw.heartbeat(group, uuid.uuid4().hex, 1)
    assert r["error"] == UNKNOWN_MEMBER_ID, r


def test_raw_join_without_subscription_is_invalid(cbroker, raw, topic_name):
    create_topic(cbroker.bootstrap, topic_name, 1)
    group = f"g-{topic_name}"
    r = raw.join(group, uuid.uuid4().hex)  # neither topic names nor a regex
    assert r["error"] == INVALID_REQUEST, r
    r = raw.join(group, uuid.uuid4().hex, version=1)
    assert r["error"] == INVALID_REQUEST, r


def test_classic_member_cannot_join_a_consumer_protocol_group(cbroker, raw, topic_name):
    bs = cbroker.bootstrap
    create_topic(bs, topic_name, 2)
    group = f"g-{topic_name}"
    modern = Consumer(cconf(bs, group))
    classic = Consumer({"bootstrap.servers": bs, "group.id": group,
                        "group.protocol": "classic", "session.timeout.ms": 6000,
                        "auto.offset.reset": "earliest"})
    try:
        modern.subscribe([topic_name])
        poll_until([modern], lambda: parts(modern) == {0, 1}, what="the modern member owns all")
        # on the wire
        assert raw.join_group_classic(group, topic_name) == INCONSISTENT_GROUP_PROTOCOL
        # and through librdkafka: the classic consumer is told, and gets nothing
        classic.subscribe([topic_name])
        errors: list[KafkaError] = []

        def sink(_c, msg):
            if msg.error() is not None:
                errors.append(msg.error())

        poll_until([classic, modern],
                   lambda: any(e.code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL
                               for e in errors),
                   sink=sink, what="INCONSISTENT_GROUP_PROTOCOL for the classic consumer")
        assert parts(classic) == set()
        assert parts(modern) == {0, 1}
    finally:
        close_all([classic, modern])


def test_raw_join_validation_as_kafka_does(cbroker, raw, topic_name):
    """Kafka's checks of a join (member epoch 0) and of the epoch itself: INVALID_REQUEST."""
    create_topic(cbroker.bootstrap, topic_name, 1)
    group = f"g-{topic_name}"
    # a join must say how long the member may take to revoke partitions
    r = raw.join(group, uuid.uuid4().hex, topics=[topic_name], rebalance_ms=-1)
    assert r["error"] == INVALID_REQUEST, r
    # a known member joining again (epoch 0) must subscribe again too
    member = uuid.uuid4().hex
    assert raw.join(group, member, topics=[topic_name])["error"] == NONE
    r = raw.heartbeat(group, member, 0)
    assert r["error"] == INVALID_REQUEST, r
    # an empty list of names is a subscription (to nothing), as in Kafka
    r = raw.heartbeat(group, member, 0, topics=[])
    assert r["error"] == NONE and r["assignment"] == {}, r
    # epochs below -2 mean nothing
    r = raw.heartbeat(group, member, -3)
    assert r["error"] == INVALID_REQUEST, r


def test_raw_regex_is_re2_and_an_invalid_one_is_refused(cbroker, raw, topic_name):
    """Subscriptions by regex use RE2 (linear time), as Kafka does: a pattern that makes a
    backtracking engine run for ages against a long topic name is answered at once, and the
    broker goes on serving; a pattern RE2 cannot compile gets INVALID_REGULAR_EXPRESSION."""
    matching = create_topic(cbroker.bootstrap, "a" * 60 + uuid.uuid4().hex, 1)
    create_topic(cbroker.bootstrap, f"{matching}-x", 1)  # backtracking's worst case
    group = f"g-{topic_name}"
    r = raw.join(group, uuid.uuid4().hex, regex="([a-z0-9]+)+$", version=1)
    assert r["error"] == NONE, r
    # the broker was not stalled: another connection is answered, and the match is right
    other = RawCGH(cbroker)
    try:
        r2 = other.join(f"{group}-2", uuid.uuid4().hex, topics=[matching])
        assert r2["error"] == NONE, r2
    finally:
        other.close()
    assert r["assignment"] == {topic_id_of(cbroker.bootstrap, matching): [0]}, r
    for bad in ("(", "a{2,1}", "(?<=a)b"):  # syntax errors, and lookbehind (not RE2)
        r = raw.join(f"{group}-bad", uuid.uuid4().hex, regex=bad, version=1)
        assert r["error"] == INVALID_REGULAR_EXPRESSION, (bad, r)
        assert "not a valid regular expression" in r["message"], r


def test_raw_revocation_before_assignment(cbroker, raw, topic_name):
    """On the wire: the first member keeps its epoch until it confirms the revocation; the
    second gets its partitions only once they are released; a member may repeat its previous
    epoch when it owns a subset of its assignment (a lost response), and is fenced otherwise."""
    create_topic(cbroker.bootstrap, topic_name, 4)
    topic_id = topic_id_of(cbroker.bootstrap, topic_name)
    group = f"g-{topic_name}"
    a, b = "member-a-" + uuid.uuid4().hex, "member-b-" + uuid.uuid4().hex
    ra = raw.join(group, a, topics=[topic_name])
    assert ra["error"] == NONE and sorted(ra["assignment"][topic_id]) == [0, 1, 2, 3], ra
    e1 = ra["epoch"]
    rb = raw.join(group, b, topics=[topic_name])
    assert rb["error"] == NONE, rb
    e2 = rb["epoch"]
    assert e2 > e1
    assert rb["assignment"] == {}  # everything still belongs to a
    # a is asked to revoke half; it keeps its epoch meanwhile
    ra = raw.heartbeat(group, a, e1, owned={topic_id: [0, 1, 2, 3]})
    assert ra["error"] == NONE and ra["epoch"] == e1, ra
    kept = sorted(ra["assignment"][topic_id])
    assert len(kept) == 2
    released = sorted({0, 1, 2, 3} - set(kept))
    # b gets nothing until a confirms
    rb = raw.heartbeat(group, b, e2)
    assert rb["error"] == NONE and rb["epoch"] == e2 and rb["assignment"] in ({}, None), rb
    ra = raw.heartbeat(group, a, e1)  # no owned partitions: not a confirmation
    assert ra["error"] == NONE and ra["epoch"] == e1, ra
    ra = raw.heartbeat(group, a, e1, owned={topic_id: kept})  # revoked: now it moves on
    assert ra["error"] == NONE and ra["epoch"] == e2 and sorted(ra["assignment"][topic_id]) \
        == kept, ra
    rb = raw.heartbeat(group, b, e2)
    assert rb["error"] == NONE and sorted(rb["assignment"][topic_id]) == released, rb
    # a's response with e2 "was lost": its previous epoch with a subset of what it owns is
    # accepted; with no owned partitions, or more than it owns, it is fenced
    again = raw.heartbeat(group, a, e1, owned={topic_id: kept})
    assert again["error"] == NONE and again["epoch"] == e2, again
    assert raw.heartbeat(group, a, e1)["error"] == FENCED_MEMBER_EPOCH
    assert raw.heartbeat(group, a, e1, owned={topic_id: [0, 1, 2, 3]})["error"] == \
        FENCED_MEMBER_EPOCH
    assert raw.heartbeat(group, a, e2)["error"] == NONE


def test_raw_static_member_rejoining_under_a_new_id_keeps_its_place(cbroker, raw, topic_name):
    bs = cbroker.bootstrap
    create_topic(bs, topic_name, 3)
    topic_id = topic_id_of(bs, topic_name)
    group = f"g-{topic_name}"
    first = raw.join(group, "static-1-" + uuid.uuid4().hex, topics=[topic_name],
                     instance_id="instance-1")
    assert first["error"] == NONE and sorted(first["assignment"][topic_id]) == [0, 1, 2]
    # the process restarts (without leaving) and joins with a new member id
    new_id = "static-2-" + uuid.uuid4().hex
    again = raw.join(group, new_id, topics=[topic_name], instance_id="instance-1")
    assert again["error"] == NONE, again
    assert again["member_id"] == new_id
    assert sorted(again["assignment"][topic_id]) == [0, 1, 2]
    d = describe(admin(bs), group)
    [m] = d.members
    assert m.member_id == new_id and m.group_instance_id == "instance-1"
    assert sorted(tp.partition for tp in m.assignment.topic_partitions) == [0, 1, 2]
    assert sorted(tp.partition for tp in m.target_assignment.topic_partitions) == [0, 1, 2]
    # a second member joins: the static member keeps what the uniform assignor lets it keep
    other = raw.join(group, "other-" + uuid.uuid4().hex, topics=[topic_name])
    assert other["error"] == NONE, other
    r = raw.heartbeat(group, new_id, again["epoch"], owned={topic_id: [0, 1, 2]})
    assert r["error"] == NONE, r
    assert len(r["assignment"][topic_id]) == 2 and set(r["assignment"][topic_id]) <= {0, 1, 2}


def test_sigterm_stops_the_broker_cleanly_with_consumer_protocol_members(start_broker,
                                                                       topic_name):
    b = start_broker(overrides=OVERRIDES)
    create_topic(b.bootstrap, topic_name, 2)
    c = Consumer(cconf(b.bootstrap, f"g-{topic_name}"))
    try:
        c.subscribe([topic_name])
        poll_until([c], lambda: parts(c) == {0, 1}, what="assigned")
        assert b.stop() == 0, b.log_text(current_run_only=True)[-3000:]
    finally:
        close_all([c])


def test_regex_subscription_is_resolved_by_the_broker(cbroker, topic_names):
    bs = cbroker.bootstrap
    base = topic_names.new()
    t1, t2 = create_topic(bs, f"{base}-match-a", 2), create_topic(bs, f"{base}-match-b", 1)
    other = create_topic(bs, f"{base}-other", 2)
    group = f"g-{base}"
    c = Consumer(cconf(bs, group))

    def owned():
        return {(tp.topic, tp.partition) for tp in c.assignment()}

    try:
        c.subscribe([f"^{base}-match-.*"])
        poll_until([c], lambda: owned() == {(t1, 0), (t1, 1), (t2, 0)},
                   what="the matching topics' partitions")
        assert all(t != other for t, _ in owned())
        # a topic created later that matches is picked up
        t3 = create_topic(bs, f"{base}-match-c", 1)
        poll_until([c], lambda: (t3, 0) in owned(), what="the new matching topic")
        d = describe(admin(bs), group)
        [m] = d.members
        assert {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions} == owned()
    finally:
        close_all([c])
