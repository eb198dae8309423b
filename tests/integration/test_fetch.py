"""Fetch semantics that clients depend on (COMPATIBILITY.md, "Offsets and fetch"):
max_bytes and partition_max_bytes (at least one whole batch when the first is larger), a
parked long-poll answered when data arrives rather than at max_wait_ms, and librdkafka's
receive.message.max.bytes respected. Raw requests from `strom.testing.wire`.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from kafka.record.memory_records import MemoryRecords

from strom.testing.kafka import create_topic
from strom.testing.wire import (
    KafkaSocket,
    fetch_v4,
    fetch_v4_many,
    parse_fetch_v4,
    split_batches,
)

pytestmark = pytest.mark.timeout(90)

_cid = iter(range(5000, 10**9))


def values_of(records: bytes) -> list[tuple[int, bytes]]:
    out = []
    mr = MemoryRecords(records)
    while mr.has_next():
        batch = mr.next_batch()
        if batch is None:
            break
        out += [(r.offset, r.value) for r in batch]
    return out


def produce_batches(bootstrap: str, topic: str, partition: int, batches: int, per_batch: int,
                    value_size: int) -> None:
    """`batches` separate batches (a flush after each) of `per_batch` records."""
    p = Producer({"bootstrap.servers": bootstrap})
    n = 0
    for _ in range(batches):
        for _ in range(per_batch):
            p.produce(topic, value=b"%06d-" % n + b"v" * value_size, partition=partition)
            n += 1
        assert p.flush(15) == 0


def fetch(broker, *args, **kwargs):
    with KafkaSocket("127.0.0.1", broker.port, timeout=20) as s:
        cid = next(_cid)
        got_cid, results = parse_fetch_v4(s.roundtrip(fetch_v4_many(*args, correlation_id=cid,
                                                                    **kwargs)))
    assert got_cid == cid
    return results


def test_partition_max_bytes_is_honoured(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 1)
    produce_batches(module_broker.bootstrap, topic_name, 0, batches=10, per_batch=10,
                    value_size=90)  # ~1 KB batches
    [full] = fetch(module_broker, [(topic_name, 0, 0, 1 << 20)], max_wait_ms=0)
    batches, partial = split_batches(full.records)
    assert partial == 0 and len(batches) == 10
    batch_size = len(batches[0][2])

    limit = batch_size * 3 + batch_size // 2
    [res] = fetch(module_broker, [(topic_name, 0, 0, limit)], max_wait_ms=0)
    assert res.error_code == 0
    assert len(res.records) <= limit, f"{len(res.records)} bytes for partition_max_bytes={limit}"
    whole, _ = split_batches(res.records)
    assert len(whole) >= 1 and whole[0][0] == 0
    assert [v for _, v in values_of(res.records)] == [
        v for _, v in values_of(full.records)][:len(values_of(res.records))]


def test_first_batch_larger_than_limits_is_returned_whole(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 1)
    produce_batches(module_broker.bootstrap, topic_name, 0, batches=2, per_batch=50,
                    value_size=200)  # ~10 KB batches
    for kwargs in ({"max_bytes": 1 << 20, "pmax": 100}, {"max_bytes": 100, "pmax": 1 << 20}):
        [res] = fetch(module_broker, [(topic_name, 0, 0, kwargs["pmax"])],
                      max_bytes=kwargs["max_bytes"], max_wait_ms=0)
        assert res.error_code == 0
        whole, _ = split_batches(res.records)
        assert len(whole) >= 1, f"no whole batch with limits {kwargs}: got {len(res.records or b'')} bytes"
        assert whole[0][0] == 0 and whole[0][1] == 49
        # at most the first batch (and maybe a cut piece of the next): not the partition
        assert len(res.records) < 2 * len(whole[0][2]), kwargs


def test_fetch_from_the_middle_of_a_batch(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 1)
    produce_batches(module_broker.bootstrap, topic_name, 0, batches=3, per_batch=10,
                    value_size=10)
    [res] = fetch(module_broker, [(topic_name, 0, 15, 1 << 20)], max_wait_ms=0)
    assert res.error_code == 0 and res.high_watermark == 30
    offsets = [o for o, _ in values_of(res.records)]
    # the batch holding offset 15 comes whole (from 10); clients skip what they did not ask for
    assert offsets[0] <= 15 and offsets[-1] == 29 and 15 in offsets


def test_max_bytes_across_partitions(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 3)
    for part in range(3):
        produce_batches(module_broker.bootstrap, topic_name, part, batches=4, per_batch=10,
                        value_size=90)
    results = fetch(module_broker, [(topic_name, p, 0, 1 << 20) for p in range(3)],
                    max_bytes=3000, max_wait_ms=0)
    assert all(r.error_code == 0 for r in results)
    total = sum(len(r.records or b"") for r in results)
    first = split_batches(results[0].records)[0]
    assert first, "the first partition must return at least one whole batch"
    assert total <= max(3000, len(first[0][2])), f"{total} bytes returned for max_bytes=3000"


def test_parked_long_poll_is_answered_when_data_arrives(module_broker, topic_name):
    """max_wait_ms is 60 s and the socket gives up after 20 s: only a broker that wakes the
    parked fetch on append passes. (No timing is asserted beyond that bound.)"""
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1)

    def produce_later():
        time.sleep(0.5)
        p = Producer({"bootstrap.servers": bs})
        p.produce(topic_name, value=b"wake-up", partition=0)
        p.flush(10)

    t = threading.Thread(target=produce_later, daemon=True)
    with KafkaSocket("127.0.0.1", module_broker.port, timeout=20) as s:
        cid = next(_cid)
        s.send(fetch_v4(topic_name, 0, 0, max_wait_ms=60_000, min_bytes=1, correlation_id=cid))
        t.start()
        got_cid, [res] = parse_fetch_v4(s.recv_frame())
    t.join(timeout=15)
    assert got_cid == cid and res.error_code == 0
    assert values_of(res.records) == [(0, b"wake-up")]


def test_empty_long_poll_expires_with_no_records(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 1)
    [res] = fetch(module_broker, [(topic_name, 0, 0, 1 << 20)], max_wait_ms=300, min_bytes=1)
    assert res.error_code == 0 and res.high_watermark == 0 and not res.records


def test_librdkafka_small_receive_buffer(module_broker, topic_name):
    """A broker that ignores fetch limits trips librdkafka's receive.message.max.bytes."""
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 2)
    for part in range(2):
        produce_batches(bs, topic_name, part, batches=20, per_batch=20, value_size=200)
    c = Consumer({"bootstrap.servers": bs, "group.id": "strom-it-unused",
                  "enable.auto.commit": False, "fetch.max.bytes": 20000, "message.max.bytes": 20000,
                  "max.partition.fetch.bytes": 8000, "receive.message.max.bytes": 21000})
    seen = {0: 0, 1: 0}
    try:
        c.assign([TopicPartition(topic_name, p, 0) for p in range(2)])
        deadline = time.monotonic() + 30
        while sum(seen.values()) < 800 and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            assert msg.offset() == seen[msg.partition()]
            seen[msg.partition()] += 1
    finally:
        c.close()
    assert seen == {0: 400, 1: 400}


@pytest.mark.parametrize("codec,codec_id", [("gzip", 1), ("snappy", 2), ("lz4", 3),
                                            ("zstd", 4), ("uncompressed", 0)])
def test_topic_compression_type_is_applied(module_broker, topic_name, codec, codec_id):
    """compression.type on the topic: the stored batches carry that codec, whatever the
    producer used, and still read back exactly."""
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1, config={"compression.type": codec})
    producer_codec = "lz4" if codec == "uncompressed" else "none"
    p = Producer({"bootstrap.servers": bs, "compression.type": producer_codec})
    for i in range(30):
        p.produce(topic_name, value=b"c-%d-" % i + b"q" * 50, key=b"k%d" % i, partition=0)
    assert p.flush(15) == 0
    [res] = fetch(module_broker, [(topic_name, 0, 0, 1 << 20)], max_wait_ms=0)
    batches, partial = split_batches(res.records)
    assert batches and partial == 0
    for _, _, raw in batches:
        attributes = int.from_bytes(raw[21:23], "big")
        assert attributes & 0x07 == codec_id, f"stored codec {attributes & 7}, want {codec_id}"
    assert [v for _, v in values_of(res.records)] == [
        b"c-%d-" % i + b"q" * 50 for i in range(30)]
