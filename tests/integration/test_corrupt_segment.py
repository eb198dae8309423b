"""Corrupt batches on disk are reported (issue 10, defect 4).

Three partitions get five one-record batches each, then the broker stops cleanly and two
segment files are damaged in place, in the middle of the file (an index entry past the
damage, so the clean start-up does not read it):
- partition 0: the second batch's length runs far past the end of the file. Before the fix
  a consumer got offset 0 and then waited forever with no error, and nothing was logged;
- partition 2: the second batch's magic byte is wrong, so its header does not parse. Before
  the fix the fetch raised out of the partition read and the broker closed the connection.
Now a fetch at the damaged batch answers CORRUPT_MESSAGE for that partition, the broker logs
it once with the file and the position, and the other partitions are served on the same
connection: raw Fetch, confluent-kafka and kafka-python.
"""

from __future__ import annotations

import struct
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from strom.testing import wire
from strom.testing.kafka import create_topic

pytestmark = pytest.mark.timeout(120)

CORRUPT_MESSAGE = 2
BATCHES = 5


def batch_positions(path) -> list[int]:
    data = path.read_bytes()
    positions, pos = [], 0
    while pos < len(data):
        positions.append(pos)
        pos += 12 + struct.unpack_from(">i", data, pos + 8)[0]
    return positions


def damage(path, position: int, offset: int, value: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(position + offset)
        f.write(value)


@pytest.fixture(scope="module")
def damaged(module_broker):
    """The module's broker restarted on a log whose partitions 0 and 2 are damaged at
    offset 1; yields (broker, topic, {partition: (file name, position of the damage)})."""
    broker, topic = module_broker, "damaged"
    # an index entry for every batch: the damage lies before the last one
    create_topic(broker.bootstrap, topic, partitions=3, config={"index.interval.bytes": "0"})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for p in range(3):
        for i in range(BATCHES):
            producer.produce(topic, b"v%d" % i, partition=p)
            assert producer.flush(10) == 0  # one batch per record
    broker.stop()
    where = {}
    for p, field, value in ((0, 8, struct.pack(">i", 0x7FFFFFF0)), (2, 16, b"\x07")):
        path = broker.log_dir / f"{topic}-{p}" / "00000000000000000000.log"
        position = batch_positions(path)[1]
        damage(path, position, field, value)
        where[p] = (path.name, position)
    broker.start()
    return broker, topic, where


def test_corrupt_batches_answer_corrupt_message_and_the_rest_is_served(damaged):
    broker, topic, where = damaged
    with wire.KafkaSocket("127.0.0.1", broker.port) as sock:
        for _ in range(3):  # a client retries: the broker logs the damage once
            _, results = wire.parse_fetch_v4(sock.roundtrip(wire.fetch_v4_many(
                [(topic, 0, 1, 1 << 20), (topic, 1, 0, 1 << 20), (topic, 2, 1, 1 << 20)],
                max_wait_ms=0)))
            by_partition = {r.partition: r for r in results}
            assert by_partition[0].error_code == CORRUPT_MESSAGE
            assert by_partition[2].error_code == CORRUPT_MESSAGE
            healthy = by_partition[1]
            assert healthy.error_code == 0 and healthy.high_watermark == BATCHES
            batches, _ = wire.split_batches(healthy.records)
            assert [b[0] for b in batches] == list(range(BATCHES))
        # the batch before the damage is still served
        _, results = wire.parse_fetch_v4(sock.roundtrip(wire.fetch_v4(topic, 0, 0)))
        batches, _ = wire.split_batches(results[0].records)
        assert results[0].error_code == 0 and [b[0] for b in batches] == [0]
    log = broker.log_text(current_run_only=True)
    for p, (name, position) in where.items():
        lines = [line for line in log.splitlines() if "CORRUPT_MESSAGE" in line
                 and f"{topic}-{p}" in line]
        assert len(lines) == 1, log
        assert name in lines[0] and f"position {position}" in lines[0]


def test_confluent_consumer_sees_the_error_and_keeps_the_other_partition(damaged):
    broker, topic, _ = damaged
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "corrupt",
                         "enable.auto.commit": False, "fetch.error.backoff.ms": 50})
    try:
        consumer.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
        got: dict[int, list[int]] = {0: [], 1: []}
        errors = []
        produced_late = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                pass
            elif msg.error():
                errors.append(msg.error())
            else:
                got[msg.partition()].append(msg.offset())
            if errors and len(got[1]) == BATCHES and not produced_late:
                # after the error, new records of the healthy partition still arrive
                producer = Producer({"bootstrap.servers": broker.bootstrap})
                producer.produce(topic, b"late", partition=1)
                assert producer.flush(10) == 0
                produced_late = True
            if produced_late and len(got[1]) == BATCHES + 1:
                break
        assert got[0] == [0]
        assert got[1] == list(range(BATCHES + 1))
        assert errors and all(e.code() == KafkaError.INVALID_MSG for e in errors), errors  # code 2
    finally:
        consumer.close()


def test_kafka_python_consumer_raises_corrupt_record(damaged):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    from kafka.errors import CorruptRecordError

    broker, topic, _ = damaged
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             group_id=None)
    try:
        consumer.assign([KTP(topic, 2)])
        consumer.seek(KTP(topic, 2), 0)
        offsets = []
        deadline = time.monotonic() + 30
        with pytest.raises(CorruptRecordError):
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    offsets += [r.offset for r in records]
        assert offsets == [0]
    finally:
        consumer.close()
