"""Fetch v13+ naming a topic id the broker does not know (a topic deleted, or deleted and
re-created under a new id, while a consumer runs): the partition is answered with
UNKNOWN_TOPIC_ID and an empty record set. A null record set made librdkafka reject the whole
response ("invalid MessageSetSize -1"), so a consumer whose topic was re-created never saw
the error it needs to refresh its metadata.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from strom.testing.kafka import create_topic
from strom.testing.wire import (
    API_FETCH,
    KafkaSocket,
    Reader,
    compact_string,
    i32,
    i64,
    request,
    uvarint,
)

pytestmark = pytest.mark.timeout(90)

UNKNOWN_TOPIC_ID = 100


def fetch_unknown_id(port: int, version: int, session_epoch: int) -> list[tuple]:
    """(partition, error, high watermark, records length or -1 for null) per partition."""
    topic_id = uuid.uuid4().bytes
    partitions = b"".join(i32(p) + i32(-1) + i64(0) + i32(-1) + i64(-1) + i32(1 << 20)
                          + uvarint(0) for p in (0, 1))
    replica_id = i32(-1) if version < 15 else b""  # v15+: in replica_state, tagged
    body = (replica_id + i32(10) + i32(1) + i32(1 << 20) + bytes([0]) + i32(0)
            + i32(session_epoch) + uvarint(2) + topic_id + uvarint(3) + partitions
            + uvarint(0) + uvarint(1) + compact_string("") + uvarint(0))
    with KafkaSocket("127.0.0.1", port) as s:
        r = Reader(s.roundtrip(request(API_FETCH, version, 9, body, header_version=2)))
    assert r.i32() == 9
    r.skip_tags()
    r.i32()  # throttle
    assert r.i16() == 0
    r.i32()  # session id
    assert r.uvarint() == 2
    assert r.data[r.pos:r.pos + 16] == topic_id
    r.pos += 16
    out = []
    for _ in range(r.uvarint() - 1):
        index, code, hw = r.i32(), r.i16(), r.i64()
        r.i64()  # last stable offset
        r.i64()  # log start offset
        assert r.uvarint() == 0  # aborted transactions: null
        assert r.i32() == -1  # preferred read replica
        n = r.uvarint() - 1
        r.pos += max(n, 0)
        r.skip_tags()
        out.append((index, code, hw, n))
    return out


@pytest.mark.parametrize(("version", "session_epoch"), [(13, -1), (16, -1), (16, 0)],
                         ids=["v13", "v16", "v16-new-session"])
def test_unknown_topic_id_has_an_empty_record_set(module_broker, version, session_epoch):
    got = fetch_unknown_id(module_broker.port, version, session_epoch)
    assert got == [(0, UNKNOWN_TOPIC_ID, -1, 0), (1, UNKNOWN_TOPIC_ID, -1, 0)]


def test_confluent_consumer_survives_its_topic_being_recreated(module_broker, topic_name):
    bootstrap = module_broker.bootstrap
    create_topic(bootstrap, topic_name, partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic_name, b"before")
    assert producer.flush(15) == 0
    logs: list[str] = []
    errors: list[KafkaError] = []

    class Log:  # librdkafka's log lines, as a logging.Logger-like sink
        def log(self, level, fmt, *args):
            logs.append(fmt % args if args else fmt)

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic_name,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 50,
                         "topic.metadata.refresh.interval.ms": 1000,
                         "enable.auto.commit": False,
                         "error_cb": errors.append}, logger=Log())
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        consumer.subscribe([topic_name])
        seen = _poll_until(consumer, b"before", errors)
        admin.delete_topics([topic_name])[topic_name].result(20)
        time.sleep(1.0)  # let the consumer fetch by the deleted topic's id
        new = admin.create_topics([NewTopic(topic_name, 1, 1)])
        new[topic_name].result(20)
        for _ in range(3):  # the consumer may resume at its old position (1)
            producer.produce(topic_name, b"after")
        assert producer.flush(15) == 0
        seen += _poll_until(consumer, b"after", errors)
    finally:
        consumer.close()
    bad = [line for line in logs if "MessageSetSize" in line or "PROTOERR" in line]
    assert not bad, bad[:5]
    assert not [e for e in errors if e.fatal()], errors
    assert b"after" in seen


def _poll_until(consumer: Consumer, value: bytes, errors: list, timeout: float = 40.0):
    """Poll until a message with `value` arrives; every value seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            errors.append(m.error())
            continue
        seen.append(m.value())
        if m.value() == value:
            return seen
    raise AssertionError(f"{value!r} not consumed in {timeout} s; seen {seen}, errors "
                         f"{errors}")
