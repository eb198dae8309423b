"""Log compaction on a real broker: a compacted topic with many updates to few keys is
cleaned by the broker's cleaner thread, and confluent-kafka, kafka-python and kcat read back
exactly the latest value of each key; `__consumer_offsets` is compacted too (100,000 commits leave a
few records, and the group's offset loads after a restart)."""

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
from strom.testing.wire import KafkaSocket, Reader, i32, i64, request, string

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


def offset_commit_v2(correlation_id: int, group: str, topic: str, offset: int) -> bytes:
    """OffsetCommit v2 of one partition, as a simple (memberless) consumer commits."""
    body = (string(group) + i32(-1) + string("") + i64(-1)
            + i32(1) + string(topic) + i32(1) + i32(0) + i64(offset) + string(""))
    return request(8, 2, correlation_id, body)


def commit_pipelined(port: int, group: str, topic: str, commits: int, window: int = 500):
    """`commits` OffsetCommit requests (offsets 1..commits) over one connection, `window`
    in flight at a time; every answer must be NONE."""
    with KafkaSocket("127.0.0.1", port, timeout=60) as s:
        # FindCoordinator creates __consumer_offsets; the first commit is retried until
        # the coordinator has loaded it
        deadline = time.monotonic() + 30
        while True:
            r = Reader(s.roundtrip(request(10, 1, -2, string(group) + b"\x00")))
            r.i32(), r.i32()  # correlation id, throttle time
            if (code := r.i16()) == 0:
                break
            assert code in (14, 15) and time.monotonic() < deadline, code
            time.sleep(0.1)
        while True:
            r = Reader(s.roundtrip(offset_commit_v2(-1, group, topic, 0)))
            r.i32(), r.i32(), r.string(), r.i32(), r.i32()
            if (code := r.i16()) == 0:
                break
            assert code in (14, 15) and time.monotonic() < deadline, code  # loading, n/a
            time.sleep(0.1)
        for start in range(0, commits, window):
            n = min(window, commits - start)
            s.send(b"".join(offset_commit_v2(start + i, group, topic, start + i + 1)
                            for i in range(n)))
            for i in range(n):
                r = Reader(s.recv_frame())
                assert r.i32() == start + i  # correlation id, in order
                assert (r.i32(), r.string(), r.i32(), r.i32()) == (1, topic, 1, 0)
                assert r.i16() == 0, f"commit {start + i} failed"


def test_the_offsets_topic_stays_small_after_100000_commits_and_loads_after_a_restart(
        start_broker, topic_name):
    broker = start_broker({"log.cleaner.backoff.ms": 100, "offsets.topic.num.partitions": 1,
                           "offsets.topic.segment.bytes": 65536})
    create_topic(broker.bootstrap, topic_name)
    commits = 100_000
    commit_pipelined(broker.port, "compacted", topic_name, commits)
    part_dir = os.path.join(str(broker.log_dir), "__consumer_offsets-0")
    deadline = time.monotonic() + 90
    # what stays: one record per key in the cleaned part, plus the dirty head the cleaner
    # may not take (the active segment, at most a segment's worth of commits)
    while (n := records_on_disk(part_dir)) is None or n > 2000:
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
