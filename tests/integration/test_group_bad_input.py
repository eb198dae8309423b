"""Group APIs given bad or awkward input, spoken raw: every request gets Kafka's error code.

Requests are encoded with kafka-python's protocol classes (an encoder that shares no code
with the broker) and sent over a plain blocking socket (strom.testing.wire.KafkaSocket), one
request at a time, so a test controls exactly which member says what and when: join with no
protocols, a session timeout out of range, a heartbeat from a stranger or from an old
generation, a commit to a topic that does not exist or with metadata over
offset.metadata.max.bytes, a fenced static member, a member that never rejoins. One member's
whole life is also run at every version of every group API the broker serves.

AdminClient bad input (deleting unknown groups, changing offsets of unknown topics) is at
the end.
"""

from __future__ import annotations

import itertools
import struct
import time

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka.protocol.admin.groups import (
    DeleteGroupsRequest,
    DeleteGroupsResponse,
    DescribeGroupsRequest,
    DescribeGroupsResponse,
    ListGroupsRequest,
    ListGroupsResponse,
)
from kafka.protocol.consumer.group import (
    HeartbeatRequest,
    HeartbeatResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    LeaveGroupRequest,
    LeaveGroupResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetDeleteRequest,
    OffsetDeleteResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from kafka.protocol.metadata.find_coordinator import (
    FindCoordinatorRequest,
    FindCoordinatorResponse,
)

from strom.testing.kafka import create_topic
from strom.testing.wire import KafkaSocket

pytestmark = pytest.mark.timeout(120)

# Kafka error codes
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_METADATA_TOO_LARGE = 12
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
ILLEGAL_GENERATION = 22
INCONSISTENT_GROUP_PROTOCOL = 23
INVALID_GROUP_ID = 24
UNKNOWN_MEMBER_ID = 25
INVALID_SESSION_TIMEOUT = 26
REBALANCE_IN_PROGRESS = 27
NON_EMPTY_GROUP = 68
GROUP_ID_NOT_FOUND = 69
MEMBER_ID_REQUIRED = 79
GROUP_MAX_SIZE_REACHED = 81
FENCED_INSTANCE_ID = 82
GROUP_SUBSCRIBED_TO_TOPIC = 86
INT32_MIN = -(2**31)

RESPONSES = {
    FindCoordinatorRequest: FindCoordinatorResponse,
    JoinGroupRequest: JoinGroupResponse,
    SyncGroupRequest: SyncGroupResponse,
    HeartbeatRequest: HeartbeatResponse,
    LeaveGroupRequest: LeaveGroupResponse,
    OffsetCommitRequest: OffsetCommitResponse,
    OffsetFetchRequest: OffsetFetchResponse,
    OffsetDeleteRequest: OffsetDeleteResponse,
    DescribeGroupsRequest: DescribeGroupsResponse,
    ListGroupsRequest: ListGroupsResponse,
    DeleteGroupsRequest: DeleteGroupsResponse,
}

MIN_SESSION_MS = 6000  # Kafka's default group.min.session.timeout.ms (kept by this broker)
MAX_SESSION_MS = 1800000


@pytest.fixture(scope="module")
def broker_overrides():
    """conftest's `module_broker` forms groups at once."""
    return {"group.initial.rebalance.delay.ms": "0"}


@pytest.fixture(scope="module")
def gbroker(module_broker):
    return module_broker


@pytest.fixture
def raw(gbroker):
    r = Raw(gbroker)
    yield r
    r.close()


@pytest.fixture
def topic(gbroker, topic_name):
    create_topic(gbroker.bootstrap, topic_name, 3)
    return topic_name


# -- a raw client --------------------------------------------------------------------------


class Raw:
    """One connection; `call` sends a request and returns the decoded response."""

    def __init__(self, broker, timeout: float = 15.0) -> None:
        self.broker = broker
        self.sock = KafkaSocket("127.0.0.1", broker.port, timeout=timeout)
        self.cids = itertools.count(1)

    def call(self, request, version: int):
        cid = next(self.cids)
        request.with_header(correlation_id=cid, client_id="strom-group-bad-input")
        payload = self.sock.roundtrip(request.encode(version=version, header=True, framed=True))
        response = RESPONSES[type(request)[None]].decode(payload, version=version, header=True)
        assert response.header.correlation_id == cid
        return response

    def close(self) -> None:
        self.sock.close()


def subscription(*topics: str) -> bytes:
    """ConsumerProtocolSubscription v0: version, topics, user data (null)."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def assignment(topic: str, partitions: list[int]) -> bytes:
    """ConsumerProtocolAssignment v0."""
    return (struct.pack(">hi", 0, 1) + struct.pack(">h", len(topic)) + topic.encode()
            + struct.pack(">i", len(partitions)) + b"".join(struct.pack(">i", p) for p in partitions)
            + struct.pack(">i", -1))


def protocols(*pairs: tuple[str, bytes]):
    return [JoinGroupRequest.JoinGroupRequestProtocol(name=n, metadata=m) for n, m in pairs]


def wait_coordinator(raw: Raw, group: str) -> None:
    """FindCoordinator (creating __consumer_offsets on first use), then wait until the
    group's offsets partition is loaded."""
    deadline = time.monotonic() + 20
    last = None
    while time.monotonic() < deadline:
        last = raw.call(FindCoordinatorRequest(key_type=0, key=group), 3)
        if last.error_code == NONE:
            fetched = raw.call(OffsetFetchRequest(group_id=group, topics=None), 5)
            if fetched.error_code == NONE:
                assert last.node_id == raw.broker.node_id
                return
            last = fetched
        time.sleep(0.1)
    raise AssertionError(f"coordinator of {group} not ready: {last}")


def join(raw: Raw, group: str, member_id: str = "", *, topic: str = "t",
         protocol_type: str = "consumer", protos=None, session: int = 10000,
         rebalance: int = 10000, instance: str | None = None, version: int = 5):
    if protos is None:
        protos = protocols(("range", subscription(topic)))
    return raw.call(JoinGroupRequest(
        group_id=group, session_timeout_ms=session, rebalance_timeout_ms=rebalance,
        member_id=member_id, group_instance_id=instance, protocol_type=protocol_type,
        protocols=protos), version)


def join_new(raw: Raw, group: str, **kw):
    """A new dynamic member: MEMBER_ID_REQUIRED, then the real join with that id."""
    first = join(raw, group, **kw)
    assert first.error_code == MEMBER_ID_REQUIRED, first
    assert first.member_id and first.generation_id == -1
    return join(raw, group, first.member_id, **kw)


def sync(raw: Raw, group: str, generation: int, member: str,
         assignments: dict[str, bytes] | None = None, *, instance: str | None = None):
    return raw.call(SyncGroupRequest(
        group_id=group, generation_id=generation, member_id=member, group_instance_id=instance,
        assignments=[SyncGroupRequest.SyncGroupRequestAssignment(member_id=m, assignment=a)
                     for m, a in (assignments or {}).items()]), 3)


def heartbeat(raw: Raw, group: str, generation: int, member: str,
              instance: str | None = None) -> int:
    return raw.call(HeartbeatRequest(group_id=group, generation_id=generation, member_id=member,
                                     group_instance_id=instance), 3).error_code


def commit(raw: Raw, group: str, offsets: dict[tuple[str, int], tuple[int, str | None]], *,
           generation: int = -1, member: str = "", instance: str | None = None,
           version: int = 7) -> dict[tuple[str, int], int]:
    by_topic: dict[str, list] = {}
    for (t, p), (off, meta) in offsets.items():
        by_topic.setdefault(t, []).append(
            OffsetCommitRequest.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
                partition_index=p, committed_offset=off, committed_leader_epoch=-1,
                committed_metadata=meta))
    resp = raw.call(OffsetCommitRequest(
        group_id=group, generation_id_or_member_epoch=generation, member_id=member,
        group_instance_id=instance, topics=[
            OffsetCommitRequest.OffsetCommitRequestTopic(name=t, partitions=ps)
            for t, ps in by_topic.items()]), version)
    return {(t.name, p.partition_index): p.error_code for t in resp.topics for p in t.partitions}


def fetch(raw: Raw, group: str, partitions: list[tuple[str, int]], version: int = 7):
    """{(topic, partition): (offset, metadata, error)} and the group-level error."""
    by_topic: dict[str, list[int]] = {}
    for t, p in partitions:
        by_topic.setdefault(t, []).append(p)
    resp = raw.call(OffsetFetchRequest(group_id=group, topics=[
        OffsetFetchRequest.OffsetFetchRequestTopic(name=t, partition_indexes=ps)
        for t, ps in by_topic.items()]), version)
    return {(t.name, p.partition_index): (p.committed_offset, p.metadata, p.error_code)
            for t in resp.topics for p in t.partitions}, resp.error_code


def describe(raw: Raw, group: str, include_ops: bool = False):
    resp = raw.call(DescribeGroupsRequest(groups=[group],
                                          include_authorized_operations=include_ops), 5)
    [g] = resp.groups
    return g


def wait_state(raw: Raw, group: str, state: str) -> None:
    """Wait (bounded) until DescribeGroups shows `state`: requests on other connections
    are ordered only by what the broker has already done."""
    deadline = time.monotonic() + 10
    d = None
    while time.monotonic() < deadline:
        d = describe(raw, group)
        if d.group_state == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"group {group} not {state}: {d}")


def one_member_group(raw: Raw, group: str, topic: str, **kw):
    """A group of one, Stable, with the member owning partition 0: (member id, generation)."""
    wait_coordinator(raw, group)
    joined = join_new(raw, group, topic=topic, **kw)
    assert joined.error_code == NONE, joined
    synced = sync(raw, group, joined.generation_id, joined.member_id,
                  {joined.member_id: assignment(topic, [0])})
    assert synced.error_code == NONE, synced
    return joined.member_id, joined.generation_id


# -- every version of every group API -------------------------------------------------------


@pytest.mark.parametrize("step", range(10))
def test_group_lifecycle_at_every_api_version(raw, topic, step):
    """One member's whole life (find the coordinator, join, sync, heartbeat, commit, fetch,
    describe, list, leave, delete) with every API at version `step` (capped at the newest
    version the broker serves), so that together the steps cover every version."""
    v = {name: min(step, hi) for name, hi in (
        ("find", 6), ("join", 9), ("sync", 5), ("heartbeat", 4), ("leave", 5), ("describe", 5),
        ("list", 5), ("delete", 2))}
    v["commit"] = min(2 + step, 9)  # OffsetCommit v2-9
    v["fetch"] = min(1 + step, 9)   # OffsetFetch v1-9
    group = f"g-{topic}"
    wait_coordinator(raw, group)

    if v["find"] >= 4:
        found = raw.call(FindCoordinatorRequest(key_type=0, coordinator_keys=[group]),
                         v["find"])
        [c] = found.coordinators
        assert (c.key, c.error_code, c.node_id, c.port) == \
            (group, NONE, raw.broker.node_id, raw.broker.port)
    else:
        found = raw.call(FindCoordinatorRequest(key_type=0, key=group), v["find"])
        assert (found.error_code, found.node_id, found.port) == \
            (NONE, raw.broker.node_id, raw.broker.port)

    joined = join(raw, group, topic=topic, version=v["join"])
    if v["join"] >= 4:
        assert joined.error_code == MEMBER_ID_REQUIRED, joined
        joined = join(raw, group, joined.member_id, topic=topic, version=v["join"])
    assert joined.error_code == NONE, joined
    member, gen = joined.member_id, joined.generation_id
    assert joined.leader == member and gen == 1
    assert joined.protocol_name == "range"
    if v["join"] >= 7:
        assert joined.protocol_type == "consumer"
    assert [(m.member_id, bytes(m.metadata)) for m in joined.members] == \
        [(member, subscription(topic))]

    req = SyncGroupRequest(group_id=group, generation_id=gen, member_id=member,
                           group_instance_id=None, protocol_type="consumer",
                           protocol_name="range", assignments=[
                               SyncGroupRequest.SyncGroupRequestAssignment(
                                   member_id=member, assignment=assignment(topic, [0, 1, 2]))])
    synced = raw.call(req, v["sync"])
    assert synced.error_code == NONE and bytes(synced.assignment) == assignment(topic, [0, 1, 2])
    if v["sync"] >= 5:
        assert (synced.protocol_type, synced.protocol_name) == ("consumer", "range")

    hb = raw.call(HeartbeatRequest(group_id=group, generation_id=gen, member_id=member,
                                   group_instance_id=None), v["heartbeat"])
    assert hb.error_code == NONE

    assert commit(raw, group, {(topic, 0): (7, f"v{step}"), (topic, 2): (9, None)},
                  generation=gen, member=member, version=v["commit"]) == \
        {(topic, 0): NONE, (topic, 2): NONE}
    if v["fetch"] >= 8:
        Group = OffsetFetchRequest.OffsetFetchRequestGroup
        resp = raw.call(OffsetFetchRequest(groups=[Group(group_id=group, topics=None)],
                                           require_stable=False), v["fetch"])
        [g] = resp.groups
        assert g.error_code == NONE
        got = {(t.name, p.partition_index): (p.committed_offset, p.metadata)
               for t in g.topics for p in t.partitions}
    else:
        fetched, err = fetch(raw, group, [(topic, 0), (topic, 1), (topic, 2)],
                             version=v["fetch"])
        assert err == NONE
        got = {tp: (off, meta) for tp, (off, meta, e) in fetched.items() if off >= 0}
        assert fetched[(topic, 1)][:2] == (-1, "")
    assert got == {(topic, 0): (7, f"v{step}"), (topic, 2): (9, "")}

    described = raw.call(DescribeGroupsRequest(groups=[group],
                                               include_authorized_operations=False),
                         v["describe"])
    [d] = described.groups
    assert (d.error_code, d.group_state, d.protocol_type, d.protocol_data) == \
        (NONE, "Stable", "consumer", "range")
    [m] = d.members
    assert (m.member_id, m.client_id, bytes(m.member_metadata), bytes(m.member_assignment)) == \
        (member, "strom-group-bad-input", subscription(topic), assignment(topic, [0, 1, 2]))
    assert m.client_host

    listed = raw.call(ListGroupsRequest(states_filter=["Stable"], types_filter=[]), v["list"])
    assert listed.error_code == NONE
    mine = [g for g in listed.groups if g.group_id == group]
    assert [g.protocol_type for g in mine] == ["consumer"]
    if v["list"] >= 4:
        assert mine[0].group_state == "Stable"
    if v["list"] >= 5:
        assert mine[0].group_type == "classic"

    if v["leave"] >= 3:
        left = raw.call(LeaveGroupRequest(group_id=group, members=[
            LeaveGroupRequest.MemberIdentity(member_id=member, group_instance_id=None)]),
            v["leave"])
        assert left.error_code == NONE
        assert [(x.member_id, x.error_code) for x in left.members] == [(member, NONE)]
    else:
        left = raw.call(LeaveGroupRequest(group_id=group, member_id=member), v["leave"])
        assert left.error_code == NONE
    assert describe(raw, group).group_state == "Empty"

    deleted = raw.call(DeleteGroupsRequest(groups_names=[group, f"never-{group}"]),
                       v["delete"])
    assert [(r.group_id, r.error_code) for r in deleted.results] == \
        [(group, NONE), (f"never-{group}", GROUP_ID_NOT_FOUND)]
    assert describe(raw, group).group_state == "Dead"
    assert fetch(raw, group, [(topic, 0)])[0][(topic, 0)][0] == -1


# -- JoinGroup -----------------------------------------------------------------------------


def test_second_join_after_member_id_required_forms_a_group_of_one(raw, topic):
    """The join after MEMBER_ID_REQUIRED completes the rebalance at once: it does not wait
    for the session or rebalance timeout (30 s; the socket gives up after 10 s)."""
    group = f"g-{topic}"
    wait_coordinator(raw, group)
    first = join(raw, group, topic=topic, session=30000, rebalance=30000)
    assert first.error_code == MEMBER_ID_REQUIRED
    quick = Raw(raw.broker, timeout=10.0)
    try:
        joined = join(quick, group, first.member_id, topic=topic, session=30000,
                      rebalance=30000)
    finally:
        quick.close()
    assert joined.error_code == NONE
    assert joined.member_id == first.member_id == joined.leader
    assert joined.generation_id == 1 and joined.protocol_name == "range"
    assert [(m.member_id, bytes(m.metadata)) for m in joined.members] == \
        [(first.member_id, subscription(topic))]
    synced = sync(raw, group, 1, first.member_id, {first.member_id: assignment(topic, [0, 1])})
    assert synced.error_code == NONE and bytes(synced.assignment) == assignment(topic, [0, 1])
    assert heartbeat(raw, group, 1, first.member_id) == NONE
    d = describe(raw, group)
    assert (d.error_code, d.group_state, d.protocol_type, d.protocol_data) == \
        (NONE, "Stable", "consumer", "range")
    assert [m.member_id for m in d.members] == [first.member_id]
    # The last member leaves: the group is Empty, not Stable with no members.
    left = raw.call(LeaveGroupRequest(group_id=group, member_id=first.member_id), 1)
    assert left.error_code == NONE
    d = describe(raw, group)
    assert (d.group_state, list(d.members)) == ("Empty", [])


def test_old_join_versions_need_no_member_id_round_trip(raw, topic):
    """JoinGroup v0-v3 predate MEMBER_ID_REQUIRED: the first join is the real one."""
    group = f"g-{topic}"
    wait_coordinator(raw, group)
    joined = join(raw, group, topic=topic, version=3)
    assert joined.error_code == NONE and joined.member_id and joined.generation_id == 1


@pytest.mark.parametrize("protocol_type, protos", [
    ("", "default"),        # empty protocol type
    ("consumer", []),       # no protocols
])
def test_join_with_empty_protocol_type_or_no_protocols(raw, topic, protocol_type, protos):
    group = f"g-{topic}"
    wait_coordinator(raw, group)
    resp = join(raw, group, topic=topic, protocol_type=protocol_type,
                protos=None if protos == "default" else protos)
    assert resp.error_code == INCONSISTENT_GROUP_PROTOCOL, resp
    assert resp.generation_id == -1


def test_join_with_protocols_the_group_does_not_support(raw, topic):
    group = f"g-{topic}"
    one_member_group(raw, group, topic)
    # another protocol type
    resp = join(raw, group, topic=topic, protocol_type="connect")
    assert resp.error_code == INCONSISTENT_GROUP_PROTOCOL, resp
    # no protocol in common with the existing member
    resp = join(raw, group, topic=topic,
                protos=protocols(("roundrobin", subscription(topic))))
    assert resp.error_code == INCONSISTENT_GROUP_PROTOCOL, resp


@pytest.mark.parametrize("session", [0, MIN_SESSION_MS - 1, MAX_SESSION_MS + 1])
def test_join_with_session_timeout_out_of_range(raw, topic, session):
    group = f"g-{topic}"
    wait_coordinator(raw, group)
    resp = join(raw, group, topic=topic, session=session)
    assert resp.error_code == INVALID_SESSION_TIMEOUT, resp


def test_empty_group_id(raw, topic):
    """Group membership needs a group id. (Kafka accepts an empty one for OffsetCommit,
    OffsetFetch, DescribeGroups and DeleteGroups, for old clients; not pinned here.)"""
    wait_coordinator(raw, f"g-{topic}")
    assert join(raw, "", topic=topic).error_code == INVALID_GROUP_ID
    assert heartbeat(raw, "", 1, "m") == INVALID_GROUP_ID
    assert sync(raw, "", 1, "m").error_code == INVALID_GROUP_ID


# -- Heartbeat, SyncGroup, OffsetCommit from the wrong member or generation ---------------


def test_heartbeat_and_sync_from_unknown_member_or_wrong_generation(raw, topic):
    group = f"g-{topic}"
    assert heartbeat(raw, f"never-{group}", 1, "nobody") == UNKNOWN_MEMBER_ID  # no such group
    member, gen = one_member_group(raw, group, topic)
    assert heartbeat(raw, group, gen, "nobody") == UNKNOWN_MEMBER_ID
    assert heartbeat(raw, group, gen + 1, member) == ILLEGAL_GENERATION
    assert heartbeat(raw, group, gen - 1, member) == ILLEGAL_GENERATION
    assert sync(raw, group, gen, "nobody").error_code == UNKNOWN_MEMBER_ID
    assert sync(raw, group, gen + 1, member).error_code == ILLEGAL_GENERATION
    wrong_type = raw.call(SyncGroupRequest(group_id=group, generation_id=gen, member_id=member,
                                           protocol_type="connect", protocol_name="range",
                                           assignments=[]), 5)
    assert wrong_type.error_code == INCONSISTENT_GROUP_PROTOCOL
    assert heartbeat(raw, group, gen, member) == NONE  # the real member is unaffected


def test_commit_from_unknown_member_or_wrong_generation(raw, topic):
    group = f"g-{topic}"
    member, gen = one_member_group(raw, group, topic)
    tp = (topic, 0)
    assert commit(raw, group, {tp: (5, None)}, generation=gen + 1, member=member) == \
        {tp: ILLEGAL_GENERATION}
    assert commit(raw, group, {tp: (5, None)}, generation=gen, member="nobody") == \
        {tp: UNKNOWN_MEMBER_ID}
    # A standalone commit (no generation, no member) to a group with members is refused.
    assert commit(raw, group, {tp: (5, None)}) == {tp: UNKNOWN_MEMBER_ID}
    got, err = fetch(raw, group, [tp])
    assert err == NONE and got[tp][0] == -1  # nothing was stored
    assert commit(raw, group, {tp: (5, "ok")}, generation=gen, member=member) == {tp: NONE}
    got, _ = fetch(raw, group, [tp])
    assert got[tp] == (5, "ok", NONE)


def test_commit_to_unknown_topic_or_partition(raw, topic):
    """Per-partition errors; the good partitions of the same request are stored."""
    group = f"g-{topic}"
    wait_coordinator(raw, group)
    missing = f"{topic}-missing"
    result = commit(raw, group, {(topic, 0): (3, "fine"), (topic, 99): (3, None),
                                 (missing, 0): (3, None)})
    assert result == {(topic, 0): NONE, (topic, 99): UNKNOWN_TOPIC_OR_PARTITION,
                      (missing, 0): UNKNOWN_TOPIC_OR_PARTITION}
    got, err = fetch(raw, group, [(topic, 0), (topic, 99), (missing, 0)])
    assert err == NONE
    assert got[(topic, 0)] == (3, "fine", NONE)
    assert got[(topic, 99)][0] == -1 and got[(missing, 0)][0] == -1


def test_commit_metadata_over_offset_metadata_max_bytes(raw, topic):
    group = f"g-{topic}"
    wait_coordinator(raw, group)
    at_limit = "m" * 4096
    over = "m" * 4097
    multibyte_over = "é" * 2049  # 2049 characters, 4098 UTF-8 bytes
    result = commit(raw, group, {(topic, 0): (1, at_limit), (topic, 1): (1, over),
                                 (topic, 2): (1, multibyte_over)})
    assert result == {(topic, 0): NONE, (topic, 1): OFFSET_METADATA_TOO_LARGE,
                      (topic, 2): OFFSET_METADATA_TOO_LARGE}
    got, _ = fetch(raw, group, [(topic, 0), (topic, 1), (topic, 2)])
    assert got[(topic, 0)] == (1, at_limit, NONE)
    assert got[(topic, 1)][0] == -1 and got[(topic, 2)][0] == -1


def test_commit_metadata_round_trips_exactly(raw, topic):
    group = f"g-{topic}"
    wait_coordinator(raw, group)
    values = {0: "", 1: "ünïcode ✓ with\x00nul", 2: None}
    assert set(commit(raw, group, {(topic, p): (p + 1, m) for p, m in values.items()})
               .values()) == {NONE}
    got, _ = fetch(raw, group, [(topic, p) for p in values])
    # A null metadata is stored as "" (as Kafka does).
    assert got == {(topic, 0): (1, "", NONE), (topic, 1): (2, values[1], NONE),
                   (topic, 2): (3, "", NONE)}


# -- static members ------------------------------------------------------------------------


def test_static_member_replaced_by_a_new_instance_is_fenced(raw, topic):
    group = f"g-{topic}"
    wait_coordinator(raw, group)
    inst = "instance-1"
    # A static member gets its id straight away (no MEMBER_ID_REQUIRED round trip).
    first = join(raw, group, topic=topic, instance=inst)
    assert first.error_code == NONE, first
    old = first.member_id
    assert sync(raw, group, first.generation_id, old, {old: assignment(topic, [0, 1, 2])},
                instance=inst).error_code == NONE
    # The same instance starts again (e.g. after a crash) and takes the old one's place,
    # with no rebalance: same generation, same assignment.
    second = join(raw, group, topic=topic, instance=inst)
    assert second.error_code == NONE
    new = second.member_id
    assert new != old and second.generation_id == first.generation_id
    synced = sync(raw, group, second.generation_id, new, instance=inst)
    assert synced.error_code == NONE
    assert bytes(synced.assignment) == assignment(topic, [0, 1, 2])
    # The old incarnation is fenced wherever it shows up.
    gen = second.generation_id
    assert heartbeat(raw, group, gen, old, inst) == FENCED_INSTANCE_ID
    assert sync(raw, group, gen, old, instance=inst).error_code == FENCED_INSTANCE_ID
    assert commit(raw, group, {(topic, 0): (1, None)}, generation=gen, member=old,
                  instance=inst) == {(topic, 0): FENCED_INSTANCE_ID}
    assert join(raw, group, old, topic=topic, instance=inst).error_code == FENCED_INSTANCE_ID
    assert heartbeat(raw, group, gen, new, inst) == NONE


def test_leave_group_batch_by_member_and_instance_id(raw, topic):
    """LeaveGroup v3+: several members at once, static ones by group.instance.id, each
    with its own error; the group is Empty afterwards."""
    group = f"g-{topic}"
    wait_coordinator(raw, group)
    static = join(raw, group, topic=topic, instance="leaver")
    assert static.error_code == NONE
    other = Raw(raw.broker)
    try:
        # A dynamic member joins: a rebalance that waits for the static member to rejoin.
        first = join(other, group, topic=topic)
        assert first.error_code == MEMBER_ID_REQUIRED
        other.sock.send(_encode_join(group, first.member_id, topic))
        wait_state(raw, group, "PreparingRebalance")
        again = join(raw, group, static.member_id, topic=topic, instance="leaver")
        assert again.error_code == NONE and again.generation_id == static.generation_id + 1
        dynamic = _decode_join(other.sock.recv_frame())
        assert dynamic.error_code == NONE and dynamic.generation_id == again.generation_id
    finally:
        other.close()
    resp = raw.call(LeaveGroupRequest(group_id=group, members=[
        LeaveGroupRequest.MemberIdentity(member_id="", group_instance_id="leaver"),
        LeaveGroupRequest.MemberIdentity(member_id=dynamic.member_id, group_instance_id=None),
        LeaveGroupRequest.MemberIdentity(member_id="", group_instance_id="stranger"),
    ]), 3)
    assert resp.error_code == NONE
    assert [(m.member_id, m.group_instance_id, m.error_code) for m in resp.members] == [
        ("", "leaver", NONE), (dynamic.member_id, None, NONE),
        ("", "stranger", UNKNOWN_MEMBER_ID)]
    d = describe(raw, group)
    assert (d.group_state, list(d.members)) == ("Empty", [])


_JOIN_CIDS = itertools.count(10_000)


def _encode_join(group: str, member_id: str, topic: str, *, session: int = 10000,
                 rebalance: int = 10000) -> bytes:
    req = JoinGroupRequest(group_id=group, session_timeout_ms=session,
                           rebalance_timeout_ms=rebalance,
                           member_id=member_id, group_instance_id=None, protocol_type="consumer",
                           protocols=protocols(("range", subscription(topic))))
    req.with_header(correlation_id=next(_JOIN_CIDS), client_id="strom-group-bad-input")
    return req.encode(version=5, header=True, framed=True)


def _decode_join(payload: bytes):
    return JoinGroupResponse.decode(payload, version=5, header=True)


# -- rebalance timeout ---------------------------------------------------------------------


def test_member_that_does_not_rejoin_within_the_rebalance_timeout_is_removed(raw, topic):
    """A member that keeps its session alive but does not rejoin during a rebalance (a
    consumer stuck in processing past max.poll.interval.ms) is removed when the rebalance
    timeout passes; the rebalance completes without it."""
    group = f"g-{topic}"
    stuck, gen = one_member_group(raw, group, topic, session=30000, rebalance=2000)
    other = Raw(raw.broker, timeout=20.0)
    try:
        first = join(other, group, topic=topic, session=30000, rebalance=2000)
        assert first.error_code == MEMBER_ID_REQUIRED
        other.sock.send(_encode_join(group, first.member_id, topic, session=30000,
                                     rebalance=2000))
        wait_state(raw, group, "PreparingRebalance")
        # The rebalance is on: the stuck member hears about it but does not rejoin.
        assert heartbeat(raw, group, gen, stuck) == REBALANCE_IN_PROGRESS
        joined = _decode_join(other.sock.recv_frame())  # returns after the 2 s timeout
        assert joined.error_code == NONE
        assert joined.generation_id == gen + 1
        assert joined.leader == first.member_id
        assert [m.member_id for m in joined.members] == [first.member_id]
    finally:
        other.close()
    assert heartbeat(raw, group, gen, stuck) == UNKNOWN_MEMBER_ID
    d = describe(raw, group)
    assert [m.member_id for m in d.members] == [first.member_id]


def test_static_member_that_does_not_rejoin_in_time_keeps_its_place(raw, topic):
    """As in Kafka, only dynamic members are dropped when a rebalance times out: a static
    member stays (until its session expires) and its assignment is kept for it."""
    group = f"g-{topic}"
    wait_coordinator(raw, group)
    inst = "slow-static"
    static = join(raw, group, topic=topic, instance=inst, session=30000, rebalance=2000)
    assert static.error_code == NONE
    gen = static.generation_id
    assert sync(raw, group, gen, static.member_id, {static.member_id: assignment(topic, [0])},
                instance=inst).error_code == NONE
    other = Raw(raw.broker, timeout=20.0)
    try:
        first = join(other, group, topic=topic, session=30000, rebalance=2000)
        assert first.error_code == MEMBER_ID_REQUIRED
        other.sock.send(_encode_join(group, first.member_id, topic, session=30000,
                                     rebalance=2000))
        joined = _decode_join(other.sock.recv_frame())  # after the 2 s rebalance timeout
    finally:
        other.close()
    assert joined.error_code == NONE and joined.generation_id == gen + 1
    # The new member leads (the static one did not rejoin) and assigns to both.
    assert joined.leader == first.member_id
    assert sorted(m.member_id for m in joined.members) == \
        sorted([first.member_id, static.member_id])
    assert [m.group_instance_id for m in joined.members
            if m.member_id == static.member_id] == [inst]
    assert sync(raw, group, joined.generation_id, first.member_id, {
        first.member_id: assignment(topic, [1, 2]),
        static.member_id: assignment(topic, [0])}).error_code == NONE
    # The static member comes back: told of the new generation, it rejoins with its id and
    # gets what the leader assigned to it.
    assert heartbeat(raw, group, gen, static.member_id, inst) == ILLEGAL_GENERATION
    back = join(raw, group, static.member_id, topic=topic, instance=inst, session=30000,
                rebalance=2000)
    assert back.error_code == NONE and back.generation_id == joined.generation_id
    synced = sync(raw, group, back.generation_id, static.member_id, instance=inst)
    assert synced.error_code == NONE and bytes(synced.assignment) == assignment(topic, [0])


# -- FindCoordinator, OffsetFetch, DescribeGroups, OffsetDelete ---------------------------


def test_find_coordinator_batched_keys(raw, topic):
    wait_coordinator(raw, f"g-{topic}")
    resp = raw.call(FindCoordinatorRequest(key_type=0, coordinator_keys=["a", f"b-{topic}"]), 4)
    assert [(c.key, c.node_id, c.port, c.error_code) for c in resp.coordinators] == \
        [(k, raw.broker.node_id, raw.broker.port, NONE) for k in ("a", f"b-{topic}")]


def test_offset_fetch_several_groups_at_once(raw, topic):
    g1, g2 = f"g1-{topic}", f"g2-{topic}"
    for g, off in ((g1, 11), (g2, 22)):
        wait_coordinator(raw, g)
        assert commit(raw, g, {(topic, 0): (off, f"meta-{g}")}) == {(topic, 0): NONE}
    Group = OffsetFetchRequest.OffsetFetchRequestGroup
    Topics = Group.OffsetFetchRequestTopics
    resp = raw.call(OffsetFetchRequest(groups=[
        Group(group_id=g1, topics=[Topics(name=topic, partition_indexes=[0, 1])]),
        Group(group_id=g2, topics=None),
        Group(group_id=f"none-{topic}", topics=None),
    ], require_stable=True), 8)
    got = {g.group_id: (g.error_code, [(t.name, p.partition_index, p.committed_offset,
                                        p.metadata) for t in g.topics for p in t.partitions])
           for g in resp.groups}
    assert got == {
        g1: (NONE, [(topic, 0, 11, f"meta-{g1}"), (topic, 1, -1, "")]),
        g2: (NONE, [(topic, 0, 22, f"meta-{g2}")]),
        f"none-{topic}": (NONE, []),
    }


def test_describe_groups_unknown_group_and_authorized_operations(raw, topic):
    group = f"g-{topic}"
    wait_coordinator(raw, group)
    # kafka-python decodes the field's default, INT32_MIN ("not asked for"), as None.
    not_asked = (INT32_MIN, None)
    d = describe(raw, f"unknown-{group}")
    assert (d.error_code, d.group_state, list(d.members)) == (NONE, "Dead", [])
    assert d.authorized_operations in not_asked
    one_member_group(raw, group, topic)
    d = describe(raw, group)
    assert d.authorized_operations in not_asked
    asked = describe(raw, group, include_ops=True)
    assert asked.authorized_operations not in (*not_asked, 0)


def test_offset_delete_errors(raw, topic):
    group = f"g-{topic}"
    wait_coordinator(raw, group)

    def offset_delete(g, parts):
        T = OffsetDeleteRequest.OffsetDeleteRequestTopic
        P = T.OffsetDeleteRequestPartition
        resp = raw.call(OffsetDeleteRequest(group_id=g, topics=[
            T(name=topic, partitions=[P(partition_index=p) for p in parts])]), 0)
        return resp.error_code, {p.partition_index: p.error_code
                                 for t in resp.topics for p in t.partitions}

    assert offset_delete(f"unknown-{group}", [0])[0] == GROUP_ID_NOT_FOUND
    member, gen = one_member_group(raw, group, topic)
    assert commit(raw, group, {(topic, 0): (4, None)}, generation=gen, member=member) == \
        {(topic, 0): NONE}
    assert offset_delete(group, [0]) == (NONE, {0: GROUP_SUBSCRIBED_TO_TOPIC})
    assert fetch(raw, group, [(topic, 0)])[0][(topic, 0)][0] == 4


# -- AdminClient bad input -----------------------------------------------------------------


def test_admin_bad_input(gbroker, topic):
    bs = gbroker.bootstrap
    adm = AdminClient({"bootstrap.servers": bs})
    group = f"g-{topic}"
    with pytest.raises(KafkaException) as ei:
        adm.delete_consumer_groups([f"unknown-{group}"], request_timeout=10)[
            f"unknown-{group}"].result(timeout=15)
    assert ei.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND

    fut = adm.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
        group, [TopicPartition(f"{topic}-missing", 0, 5)])], request_timeout=10)[group]
    try:
        errors = [tp.error.code() for tp in fut.result(timeout=15).topic_partitions]
    except KafkaException as e:
        errors = [e.args[0].code()]
    assert errors == [KafkaError.UNKNOWN_TOPIC_OR_PART]

    # A group nobody ever used has no offsets (and no error).
    res = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(
        f"unknown-{group}", [TopicPartition(topic, 0)])])[f"unknown-{group}"].result(timeout=15)
    assert [(tp.partition, tp.offset, tp.error) for tp in res.topic_partitions] == \
        [(0, -1001, None)]


def test_join_a_full_group(start_broker, topic_name):
    """group.max.size: a new member of a full group gets GROUP_MAX_SIZE_REACHED; the members
    already in it are unaffected."""
    b = start_broker(overrides={"group.initial.rebalance.delay.ms": "0", "group.max.size": "1"})
    create_topic(b.bootstrap, topic_name, 1)
    group = f"g-{topic_name}"
    r = Raw(b)
    try:
        member, gen = one_member_group(r, group, topic_name)
        full = join(r, group, topic=topic_name)
        assert full.error_code == GROUP_MAX_SIZE_REACHED, full
        assert heartbeat(r, group, gen, member) == NONE
    finally:
        r.close()
