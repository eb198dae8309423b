"""Log compaction on a real broker: a compacted topic with many updates to few keys is
cleaned by the broker's cleaner thread, and confluent-kafka, kafka-python and kcat read back
exactly the latest value of each key; `__consumer_offsets` is compacted too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from strom.log.records import iter_batches
from strom.testing.kafka import consume_partition, create_topic

pytestmark = pytest.mark.timeout(120)

KEYS = 1000
UPDATES = 100_000
SEGMENT_MS = 1500


@pytest.fixture(scope="module")
def broker_overrides() -> dict:
    return {"log.cleaner.backoff.ms": 100, "log.retention.check.interval.ms": 200}


def records_on_disk(part_dir: str) -> int | None:
    """Records in the partition's segment files; None while a swap is under way."""
    total = 0
    try:
        for name in os.listdir(part_dir):
            if name.endswith((".cleaned", ".swap")):
                return None
            if name.endswith(".log"):
                with open(os.path.join(part_dir, name), "rb") as f:
                    data = f.read()
                total += sum(h.records_count for _, h in iter_batches(data))
    except FileNotFoundError:
        return None
    return total


def test_a_compacted_topic_keeps_exactly_the_latest_value_per_key(module_broker, topic_name):
    bootstrap = module_broker.bootstrap
    create_topic(bootstrap, topic_name, config={
        "cleanup.policy": "compact", "segment.bytes": "65536", "segment.ms": str(SEGMENT_MS),
        "min.cleanable.dirty.ratio": "0.01"})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "queue.buffering.max.messages": UPDATES + 10})
    latest: dict[bytes, bytes] = {}
    for i in range(UPDATES):
        key = b"key-%03d" % (i % KEYS)
        value = b"value-%d-" % i + b"x" * 40
        latest[key] = value
        producer.produce(topic_name, value, key)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    # The active segment is never cleaned, and (as in Kafka) it rolls only on an append:
    # once segment.ms has passed, one record of another key rolls it and is then the only
    # record of the active segment.
    time.sleep(SEGMENT_MS / 1000 + 0.1)  # time itself is the condition here: segment.ms
    producer.produce(topic_name, b"end", b"end")
    assert producer.flush(30) == 0
    part_dir = os.path.join(str(module_broker.log_dir), f"{topic_name}-0")
    deadline = time.monotonic() + 60
    while records_on_disk(part_dir) != KEYS + 1:
        assert time.monotonic() < deadline, (records_on_disk(part_dir),
                                             module_broker.log_text()[-3000:])
        time.sleep(0.2)
    assert "Cleaned " in module_broker.log_text()

    messages = consume_partition(bootstrap, topic_name, 0, end=UPDATES + 1)
    assert len(messages) == KEYS + 1 and messages[-1].key() == b"end"
    assert messages[-1].offset() == UPDATES  # offsets are kept
    assert {m.key(): m.value() for m in messages[:-1]} == latest

    from kafka import KafkaConsumer
    from kafka import TopicPartition as KpTopicPartition

    kp = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                       consumer_timeout_ms=5000)
    try:
        kp.assign([KpTopicPartition(topic_name, 0)])
        kp.seek_to_beginning()
        got = {}
        for m in kp:
            got[m.key] = (m.offset, m.value)
            if m.key == b"end":
                break
    finally:
        kp.close()
    assert len(got) == KEYS + 1 and got[b"end"][0] == UPDATES
    assert {k: v for k, (_, v) in got.items() if k != b"end"} == latest

    kcat = shutil.which("kcat")
    if kcat:
        out = subprocess.run([kcat, "-C", "-b", bootstrap, "-t", topic_name, "-e", "-J"],
                             capture_output=True, timeout=30, check=True).stdout
        rows = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        assert len(rows) == KEYS + 1 and rows[-1]["key"] == "end"
        assert {r["key"].encode(): r["payload"].encode() for r in rows[:-1]} == latest


def test_the_offsets_topic_is_compacted_and_its_groups_load_after_a_restart(
        start_broker, topic_name):
    broker = start_broker({"log.cleaner.backoff.ms": 100, "offsets.topic.num.partitions": 1,
                           "offsets.topic.segment.bytes": 16384})
    create_topic(broker.bootstrap, topic_name)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compacted",
                         "enable.auto.commit": False})
    commits = 3000
    try:
        for i in range(commits):
            consumer.commit(offsets=[TopicPartition(topic_name, 0, i + 1)],
                            asynchronous=False)
    finally:
        consumer.close()
    part_dir = os.path.join(str(broker.log_dir), "__consumer_offsets-0")
    deadline = time.monotonic() + 60
    while (n := records_on_disk(part_dir)) is None or n > commits // 10:
        assert time.monotonic() < deadline, (n, broker.log_text()[-3000:])
        time.sleep(0.2)
    assert "Cleaned __consumer_offsets-0" in broker.log_text()
    broker.restart()
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "compacted"})
    try:
        committed = consumer.committed([TopicPartition(topic_name, 0)], timeout=20)
    finally:
        consumer.close()
    assert committed[0].offset == commits
