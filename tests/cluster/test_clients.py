"""Producers other than librdkafka writing acks=all to an RF=3 topic: every record is
acknowledged once and stored at the offset its acknowledgement named, in the order it was
sent per partition, identically on all three replicas.

kafka-python runs without idempotence, so it keeps up to 5 requests in flight per broker
and the leaders pipeline them (server/connection.py; a check with a counter in the broker
saw 20 requests appended behind a waiting one, 5 deep at most). An idempotent kafka-python,
and aiokafka, send a partition's next batch only once the last one is acknowledged: they
check that the pipeline's inline path serves them as before.
"""

from __future__ import annotations

import asyncio

import pytest

from strom.testing.cluster import read_partitions

pytestmark = pytest.mark.timeout(150)

RECORDS = 3000
PARTITIONS = 3


def check(cluster, topic: str, acked: dict[int, tuple[int, int]]) -> None:
    """`acked`: record number -> (partition, offset) from the producer's acknowledgements."""
    assert sorted(acked) == list(range(RECORDS))
    assert len(set(acked.values())) == RECORDS  # no offset given twice
    ends = {p: cluster.high_watermark(topic, p) for p in range(PARTITIONS)}
    assert sum(ends.values()) == RECORDS  # nothing stored twice
    rows = read_partitions(cluster.bootstrap, topic, ends)
    stored = {(p, offset): value for p, part in rows.items() for offset, _key, value in part}
    for i, where in acked.items():
        assert stored[where] == b"%d" % i
    for p in range(PARTITIONS):  # sent order is offset order, per partition
        numbers = [int(value) for _offset, _key, value in rows[p]]
        assert numbers == sorted(numbers)
        for node_id in cluster.brokers:
            assert cluster.log_bytes(node_id, topic, p, ends[p]) == \
                cluster.log_bytes(1, topic, p, ends[p])


@pytest.mark.parametrize("idempotent", [False, True])
def test_kafka_python_acks_all(make_cluster, idempotent):
    from kafka import KafkaProducer

    cluster = make_cluster(3)
    cluster.create_topic("kp", PARTITIONS, 3, {"min.insync.replicas": "2"})
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all",
                             max_in_flight_requests_per_connection=5, linger_ms=1,
                             batch_size=2048, enable_idempotence=idempotent)
    try:
        futures = {i: producer.send("kp", value=b"%d" % i, partition=i % PARTITIONS)
                   for i in range(RECORDS)}
        producer.flush(60)
        acked = {}
        for i, f in futures.items():
            md = f.get(timeout=30)
            acked[i] = (md.partition, md.offset)
    finally:
        producer.close(10)
    check(cluster, "kp", acked)


def test_aiokafka_acks_all(make_cluster):
    from aiokafka import AIOKafkaProducer

    cluster = make_cluster(3)
    cluster.create_topic("aio", PARTITIONS, 3, {"min.insync.replicas": "2"})

    async def produce() -> dict[int, tuple[int, int]]:
        producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all",
                                    linger_ms=1, max_batch_size=2048)
        await producer.start()
        try:
            sends = {i: await producer.send("aio", value=b"%d" % i, partition=i % PARTITIONS)
                     for i in range(RECORDS)}
            acked = {}
            for i, f in sends.items():
                md = await asyncio.wait_for(f, 60)
                acked[i] = (md.partition, md.offset)
            return acked
        finally:
            await producer.stop()

    check(cluster, "aio", asyncio.run(asyncio.wait_for(produce(), 120)))
