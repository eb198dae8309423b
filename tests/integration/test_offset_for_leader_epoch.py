"""OffsetForLeaderEpoch (key 23) against a real strom broker, with raw requests through
strom.protocol.client.BrokerConnection: the end offset of the latest epoch is the log end
offset, an older epoch ends where the next one starts, UNDEFINED (-1, -1) for epoch -1 and
for an epoch above the latest, and the errors UNKNOWN_TOPIC_OR_PARTITION (3),
FENCED_LEADER_EPOCH (74) and UNKNOWN_LEADER_EPOCH (75).

A single broker keeps leader epoch 0; to get a second epoch, a test stops the broker, bumps
the partition's leader_epoch in the local metadata store's file (as a controller would on a
leader change) and starts it again on the same data. librdkafka (KIP-320) then validates
its position with OffsetForLeaderEpoch: a consumer that lives through that change, and a
group member resuming from an offset committed in the old epoch, must carry on with no loss
or duplicates.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from confluent_kafka import Consumer, Producer
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaPythonTopicPartition

from strom.protocol.client import BrokerConnection
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, request_module, request_schema
from strom.testing.kafka import create_topic

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
UNKNOWN_TOPIC_OR_PARTITION = 3
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75


def run(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _requests(port: int, requests: list) -> list:
    conn = BrokerConnection(HOST, port, client_id="strom-ofle-test", timeout_s=15)
    await conn.connect()
    try:
        return list(await asyncio.gather(*(conn.request(r) for r in requests)))
    finally:
        await conn.close()


def offsets_for_epochs(broker, topic: str, asks: list[tuple[int, int, int]], *,
                       version: int = 4, replica_id: int = -1) -> list[tuple[int, int, int]]:
    """[(partition, current_leader_epoch, leader_epoch)] -> [(error, epoch, end offset)]."""
    mod = request_module(23, version)
    req = make(request_schema(23, version), replica_id=replica_id, topics=(
        make(mod.OffsetForLeaderTopic, topic=topic, partitions=tuple(
            make(mod.OffsetForLeaderPartition, partition=p, current_leader_epoch=current,
                 leader_epoch=epoch) for p, current, epoch in asks)),))
    (resp,) = run(_requests(broker.port, [req]))
    (t,) = resp.topics
    assert t.topic == topic
    assert [r.partition for r in t.partitions] == [p for p, _, _ in asks]
    return [(int(r.error_code), r.leader_epoch, r.end_offset) for r in t.partitions]


def leader_epoch(broker, topic: str, partition: int = 0) -> int:
    mod = request_module(3, 12)
    req = make(request_schema(3, 12), topics=(make(mod.MetadataRequestTopic, name=topic,
                                                   topic_id=None),),
               allow_auto_topic_creation=False, include_topic_authorized_operations=False,
               include_cluster_authorized_operations=False)
    (resp,) = run(_requests(broker.port, [req]))
    (t,) = resp.topics
    (p,) = [p for p in t.partitions if p.partition_index == partition]
    assert p.error_code == ErrorCode.none
    return p.leader_epoch


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for v in values:
        p.produce(topic, value=v, partition=0)
    assert p.flush(15) == 0


def consume(consumer: Consumer, n: int, timeout: float = 30) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.append((m.offset(), m.value()))
    return got


# --- one epoch (module broker) ------------------------------------------------------------

@pytest.mark.parametrize("version", [2, 3, 4])
def test_latest_epoch_ends_at_the_log_end_offset(module_broker, topic_name, version):
    create_topic(module_broker.bootstrap, topic_name)
    produce(module_broker.bootstrap, topic_name, [b"a", b"b", b"c", b"d", b"e"])
    epoch = leader_epoch(module_broker, topic_name)
    assert epoch == 0
    assert offsets_for_epochs(module_broker, topic_name, [(0, epoch, epoch), (0, -1, epoch)],
                              version=version) == [(0, epoch, 5), (0, epoch, 5)]


def test_a_follower_gets_the_same_answer(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name)
    produce(module_broker.bootstrap, topic_name, [b"a", b"b"])
    for version in (3, 4):
        assert offsets_for_epochs(module_broker, topic_name, [(0, 0, 0)], version=version,
                                  replica_id=2) == [(0, 0, 2)]


def test_empty_partition(module_broker, topic_name):
    """A new leader records its epoch's start at election, before any append (Kafka's
    LeaderEpochFileCache.assign in Partition.makeLeader)."""
    create_topic(module_broker.bootstrap, topic_name)
    assert offsets_for_epochs(module_broker, topic_name, [(0, 0, 0)]) == [(0, 0, 0)]


def test_unknown_topic_or_partition(module_broker, topic_name):
    assert offsets_for_epochs(module_broker, topic_name, [(0, -1, 0)]) == \
        [(UNKNOWN_TOPIC_OR_PARTITION, -1, -1)]
    create_topic(module_broker.bootstrap, topic_name)
    produce(module_broker.bootstrap, topic_name, [b"a"])
    assert offsets_for_epochs(module_broker, topic_name, [(0, -1, 0), (5, -1, 0)]) == \
        [(0, 0, 1), (UNKNOWN_TOPIC_OR_PARTITION, -1, -1)]


def test_future_current_epoch_is_unknown_leader_epoch(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name)
    assert offsets_for_epochs(module_broker, topic_name, [(0, 1, 0), (0, 9, 0)]) == \
        [(UNKNOWN_LEADER_EPOCH, -1, -1)] * 2


def test_undefined_and_too_new_epochs(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name)
    produce(module_broker.bootstrap, topic_name, [b"a"])
    # epoch -1 (UNDEFINED_EPOCH) lies below the first epoch (0); 1 is above the latest
    assert offsets_for_epochs(module_broker, topic_name, [(0, -1, -1), (0, 0, 1)]) == \
        [(0, -1, -1), (0, -1, -1)]


# --- several epochs (a broker restarted with a bumped leader epoch) -------------------------

def bump_leader_epoch(broker, topic: str, partition: int, epoch: int) -> None:
    """Stop the broker, set the partition's leader epoch in its metadata file, start it."""
    broker.stop()
    path = broker.log_dir / "strom-metadata.json"
    tree = json.loads(path.read_text())
    key = f"/brokers/topics/{topic}/partitions/{partition}/state"
    data, version = tree["nodes"][key]
    state = json.loads(base64.b64decode(data))
    state["leader_epoch"] = epoch
    tree["nodes"][key] = [base64.b64encode(json.dumps(state).encode()).decode(), version + 1]
    path.write_text(json.dumps(tree))
    broker.start()
    deadline = time.monotonic() + 15
    while leader_epoch(broker, topic, partition) != epoch:
        assert time.monotonic() < deadline, "the bumped epoch did not show in Metadata"
        time.sleep(0.1)


def test_epochs_after_a_leader_change(start_broker, tmp_path, topic_name):
    broker = start_broker(log_dir=tmp_path / "data")
    create_topic(broker.bootstrap, topic_name)
    produce(broker.bootstrap, topic_name, [b"a", b"b", b"c"])  # epoch 0: offsets 0-2
    bump_leader_epoch(broker, topic_name, 0, 3)
    produce(broker.bootstrap, topic_name, [b"d", b"e"])  # epoch 3: offsets 3-4

    asks = [
        (0, 3, 3),    # the latest epoch: the log end offset
        (0, 3, 0),    # epoch 0 ends where epoch 3 starts
        (0, 3, 2),    # no epoch 2: the largest epoch below it, ending where 3 starts
        (0, -1, -1),  # UNDEFINED_EPOCH
        (0, 3, 4),    # above the latest epoch
        (0, 2, 3),    # an older current epoch: fenced
        (0, 0, 0),
        (0, 4, 3),    # a newer current epoch: unknown
    ]
    assert offsets_for_epochs(broker, topic_name, asks) == [
        (0, 3, 5),
        (0, 0, 3),
        (0, 0, 3),
        (0, -1, -1),
        (0, -1, -1),
        (FENCED_LEADER_EPOCH, -1, -1),
        (FENCED_LEADER_EPOCH, -1, -1),
        (UNKNOWN_LEADER_EPOCH, -1, -1),
    ]
    # v2 (no replica_id) and a follower's v3 agree
    assert offsets_for_epochs(broker, topic_name, asks[:3], version=2) == \
        [(0, 3, 5), (0, 0, 3), (0, 0, 3)]
    assert offsets_for_epochs(broker, topic_name, asks[:3], version=3, replica_id=7) == \
        [(0, 3, 5), (0, 0, 3), (0, 0, 3)]


def test_librdkafka_consumers_across_a_leader_epoch_change(start_broker, tmp_path, topic_name):
    """librdkafka validates its fetch position with OffsetForLeaderEpoch when the leader
    epoch moves (and when resuming from an offset committed with an older epoch)."""
    broker = start_broker(log_dir=tmp_path / "data")
    create_topic(broker.bootstrap, topic_name)
    produce(broker.bootstrap, topic_name, [b"v0", b"v1", b"v2"])
    conf = {"bootstrap.servers": broker.bootstrap, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "topic.metadata.refresh.interval.ms": 500}
    live = Consumer({**conf, "group.id": f"{topic_name}-live"})
    committed = Consumer({**conf, "group.id": f"{topic_name}-committed"})
    try:
        live.subscribe([topic_name])
        committed.subscribe([topic_name])
        assert consume(live, 3) == [(0, b"v0"), (1, b"v1"), (2, b"v2")]
        assert consume(committed, 3) == [(0, b"v0"), (1, b"v1"), (2, b"v2")]
        committed.commit(asynchronous=False)
        committed.close()
        committed = None

        bump_leader_epoch(broker, topic_name, 0, 2)
        produce(broker.bootstrap, topic_name, [b"v3", b"v4"])

        assert consume(live, 2) == [(3, b"v3"), (4, b"v4")]
        resumed = Consumer({**conf, "group.id": f"{topic_name}-committed"})
        try:
            resumed.subscribe([topic_name])
            assert consume(resumed, 2) == [(3, b"v3"), (4, b"v4")]
            assert consume(resumed, 1, timeout=2) == []
        finally:
            resumed.close()
        assert consume(live, 1, timeout=2) == []
    finally:
        live.close()
        if committed is not None:
            committed.close()


def kafka_python_consume(consumer: KafkaConsumer, n: int, timeout: float = 30
                         ) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got += [(r.offset, r.value) for r in records]
    return got


def test_kafka_python_consumer_across_a_leader_epoch_change(start_broker, tmp_path,
                                                           topic_name):
    """kafka-python 3 validates its position with OffsetForLeaderEpoch too."""
    broker = start_broker(log_dir=tmp_path / "data")
    create_topic(broker.bootstrap, topic_name)
    produce(broker.bootstrap, topic_name, [b"v0", b"v1", b"v2"])
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             metadata_max_age_ms=500)
    try:
        consumer.assign([KafkaPythonTopicPartition(topic_name, 0)])
        assert kafka_python_consume(consumer, 3) == [(0, b"v0"), (1, b"v1"), (2, b"v2")]
        bump_leader_epoch(broker, topic_name, 0, 5)
        produce(broker.bootstrap, topic_name, [b"v3", b"v4"])
        assert kafka_python_consume(consumer, 2) == [(3, b"v3"), (4, b"v4")]
        assert kafka_python_consume(consumer, 1, timeout=2) == []
    finally:
        consumer.close()
