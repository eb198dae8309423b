"""A compacted, replicated partition: each replica's cleaner cleans its own log (as in
Kafka), and once all are cleaned every replica holds the same records at the same
offsets, exactly the latest one per key."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from strom.log.records import decode_batch, iter_batches
from strom.testing.cluster import wait_until

pytestmark = pytest.mark.timeout(150)

KEYS = 50
UPDATES = 5000
SEGMENT_MS = 1500


def records_of(cluster, node_id: int, topic: str) -> list[tuple[int, bytes, bytes]] | None:
    """(offset, key, value) of every record in the replica's segment files; None while a
    clean's files are around."""
    d = cluster.partition_dir(node_id, topic, 0)
    try:
        if any(p.name.endswith((".cleaned", ".swap")) for p in d.iterdir()):
            return None
        data = b"".join(f.read_bytes() for f in sorted(d.glob("*.log")))
    except FileNotFoundError:
        return None
    return [(r.offset, r.key, r.value) for pos, _ in iter_batches(data)
            for r in decode_batch(data, pos).records]


def test_every_replica_cleans_its_own_log_to_the_same_records(make_cluster):
    cluster = make_cluster(3, {"log.cleaner.backoff.ms": 100})
    cluster.create_topic("table", 1, 3, {
        "cleanup.policy": "compact", "segment.bytes": "16384", "segment.ms": str(SEGMENT_MS),
        "min.cleanable.dirty.ratio": "0.01", "min.insync.replicas": "3"})
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "linger.ms": 5})
    latest = {}
    for i in range(UPDATES):
        key = b"k%02d" % (i % KEYS)
        latest[key] = b"v%d" % i
        producer.produce("table", latest[key], key)
        if i % 500 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    # the active segments roll on the next append once segment.ms has passed
    time.sleep(SEGMENT_MS / 1000 + 0.1)  # time itself is the condition here
    producer.produce("table", b"end", b"end")
    assert producer.flush(30) == 0
    expected = None

    def all_cleaned() -> bool:
        nonlocal expected
        views = [records_of(cluster, n, "table") for n in cluster.brokers]
        if any(v is None or len(v) != KEYS + 1 for v in views):
            return False
        expected = views[0]
        return all(v == views[0] for v in views)

    wait_until(all_cleaned, 60, what="every replica cleaned to the same records")
    assert expected[-1] == (UPDATES, b"end", b"end")
    assert {k: v for _o, k, v in expected[:-1]} == latest
    for node_id, broker in cluster.brokers.items():
        assert "INFO Cleaned table-0" in broker.log_text(), node_id
