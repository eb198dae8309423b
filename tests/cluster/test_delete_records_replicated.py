"""DeleteRecords on an RF=3 partition: the leader answers once every replica has moved its
log start offset (followers learn it from Fetch responses and report theirs back), so
after the leader goes the new leader's earliest offset is the new start, and every
replica drops its whole segments below it and checkpoints the new start. A follower that
does not fetch makes the request end REQUEST_TIMED_OUT."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from strom.log import checkpoint

pytestmark = pytest.mark.timeout(120)

RECORDS = 40
START = 25


def test_every_replica_moves_its_log_start_offset(make_cluster):
    cluster = make_cluster(3)
    cluster.create_topic("t", 1, 3, {"segment.bytes": "256", "min.insync.replicas": "3"})
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                         "linger.ms": 0})
    for i in range(RECORDS):
        producer.produce("t", b"v%d" % i, partition=0)
        assert producer.flush(30) == 0  # one batch per record: many small segments

    admin = cluster.admin()
    fs = admin.delete_records([TopicPartition("t", 0, START)], request_timeout=30)
    (_, fut), = fs.items()
    assert fut.result(timeout=40).low_watermark == START  # the minimum over all replicas

    for node_id in cluster.brokers:
        bases = sorted(int(f.name[:-4]) for f in cluster.partition_dir(node_id, "t", 0).iterdir()
                       if f.name.endswith(".log"))
        assert 0 < bases[0] <= START, (node_id, bases)

    # a follower that does not fetch (paused, still registered) holds the answer back:
    # REQUEST_TIMED_OUT after the request's timeout, the leader's start moved all the same
    leader = cluster.leader_of("t", 0)
    follower = next(n for n in cluster.brokers if n != leader)
    cluster.pause(follower)
    try:
        fs = admin.delete_records([TopicPartition("t", 0, START + 1)], request_timeout=30,
                                  operation_timeout=0.5)
        with pytest.raises(KafkaException) as e:
            next(iter(fs.values())).result(timeout=40)
        assert e.value.args[0].code() == KafkaError.REQUEST_TIMED_OUT
    finally:
        cluster.resume(follower)
    fs = admin.delete_records([TopicPartition("t", 0, START + 2)], request_timeout=30)
    assert next(iter(fs.values())).result(timeout=40).low_watermark == START + 2

    old_leader = cluster.leader_of("t", 0)
    cluster.stop(old_leader)
    cluster.wait_for_leader("t", 0, not_on=old_leader)
    tp = TopicPartition("t", 0)
    admin = cluster.admin()
    got = admin.list_offsets({tp: OffsetSpec.earliest()}, request_timeout=10)[tp]
    assert got.result(timeout=15).offset == START + 2

    for node_id in cluster.brokers:
        cluster.stop(node_id)
        path = cluster.brokers[node_id].log_dir / "log-start-offset-checkpoint"
        assert checkpoint.read_offsets(str(path)).get(("t", 0)) == START + 2, node_id
