"""Failover as clients see it: the controller, leadership, routing, shutdown, deletion.

- kill -9 of the controller: another broker takes the office (DescribeCluster and
  Metadata name it) within a bounded time, and topic administration keeps working;
- a produce sent to a replica that does not lead gets NOT_LEADER_OR_FOLLOWER (6), while
  producers and consumers bootstrapped from any broker route to the leader (confluent-kafka
  and kafka-python);
- SIGTERM of a leader is a controlled shutdown: by the time the process has exited, every
  partition it led has a live leader, and acks=all producing across it loses nothing;
- deleting a topic removes its partition directories from every broker's disk, also from
  a broker that was down during the deletion (when it starts again).
"""

from __future__ import annotations

import asyncio
import datetime
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from strom.protocol.client import BrokerConnection
from strom.protocol.messages import make, request_module, request_schema
from strom.testing import wire
from strom.testing.cluster import BackgroundProducer, read_partitions, wait_until

pytestmark = pytest.mark.timeout(120)

NOT_LEADER_OR_FOLLOWER = 6


def create(cluster, name: str, partitions: int = 1, replication_factor: int = 3,
           assignment: list[list[int]] | None = None) -> None:
    admin = cluster.admin()
    if assignment is not None:
        new = NewTopic(name, num_partitions=len(assignment), replication_factor=-1,
                       replica_assignment=assignment)
    else:
        new = NewTopic(name, partitions, replication_factor)
    admin.create_topics([new])[name].result(timeout=30)
    for p in range(len(assignment) if assignment else partitions):
        cluster.wait_for_leader(name, p)


def test_controller_failover(make_cluster):
    cluster = make_cluster(3)
    create(cluster, "before", 3, 3)
    old = cluster.controller_id()
    assert old in cluster.brokers

    cluster.kill(old)
    # the new controller comes after the dead one's ZooKeeper session (4 s) expires
    new = wait_until(lambda: (c := cluster.controller_id()) not in (old, -1) and c, 30,
                     what="a new controller")
    assert new in cluster.brokers and cluster.brokers[new].is_alive()
    admin = cluster.admin()  # kept alive until its results are in
    described = admin.describe_cluster(request_timeout=10).result(timeout=15)
    assert described.controller.id == new
    assert {n.id for n in described.nodes} == set(cluster.brokers) - {old}

    # administration and leadership work under the new controller
    create(cluster, "after", 2, 2)
    for p in range(3):
        assert cluster.wait_for_leader("before", p, not_on=old) != old
    with pytest.raises(Exception, match="(?i)replication factor"):
        create(cluster, "too-wide", 1, 3)  # only two brokers are alive

    cluster.restart(old)
    cluster.wait_for_brokers(set(cluster.brokers))
    assert cluster.controller_id() == new  # the office does not move back
    create(cluster, "wide-again", 1, 3)
    for p in range(3):
        cluster.wait_for_isr("before", p, set(cluster.brokers))


def test_paused_controller_loses_the_office(make_cluster):
    """A controller frozen past its session timeout (a long GC pause, a stopped VM) is
    replaced; when it wakes it resigns instead of acting as a second controller."""
    cluster = make_cluster(3)
    create(cluster, "t", 3, 3)
    old = cluster.controller_id()
    cluster.pause(old)
    try:
        new = wait_until(lambda: (c := cluster.controller_id()) not in (old, -1) and c, 30,
                         what="a new controller")
        for p in range(3):
            cluster.wait_for_leader("t", p, not_on=old)
    finally:
        cluster.resume(old)
    wait_until(lambda: "is no longer the controller" in
               cluster.brokers[old].log_text(current_run_only=True), 30,
               what="the old controller resigned")
    cluster.wait_for_brokers(set(cluster.brokers), timeout=30)
    for p in range(3):
        cluster.wait_for_isr("t", p, set(cluster.brokers))
    # every broker names the same controller, and it acts: a broker failure is handled
    for node in cluster.brokers:
        admin = AdminClient({"bootstrap.servers": cluster.brokers[node].bootstrap})
        assert admin.list_topics(timeout=10).controller_id == new
    victim = next(b for b in cluster.brokers if b not in (old, new))
    led = [p for p in range(3) if cluster.leader_of("t", p) == victim]
    cluster.kill(victim)
    for p in led:
        cluster.wait_for_leader("t", p, not_on=victim)


async def _produce_v11(port: int, topic: str, records: bytes):
    conn = BrokerConnection("127.0.0.1", port, timeout_s=10)
    await conn.connect()
    try:
        mod = request_module(0, 11)
        request = make(request_schema(0, 11), transactional_id=None, acks=1,
                       timeout=datetime.timedelta(seconds=10), topic_data=(make(
                           mod.TopicProduceData, name=topic, partition_data=(make(
                               mod.PartitionProduceData, index=0, records=records),)),))
        return await conn.request(request)
    finally:
        await conn.close()


def test_not_leader_or_follower_and_client_routing(make_cluster):
    cluster = make_cluster(3)
    topic = "routed"
    create(cluster, topic, assignment=[[1, 2]])  # leader 1, follower 2; broker 3 has none
    assert cluster.leader_of(topic, 0) == 1
    batch = wire.encode_record_batch([wire.Record(b"misrouted")])

    for node in (2, 3):  # the follower, and a broker that does not host the partition
        with wire.KafkaSocket("127.0.0.1", cluster.brokers[node].port) as sock:
            _, results = wire.parse_produce(sock.roundtrip(wire.produce(topic, 0, batch)))
            assert results[0].error_code == NOT_LEADER_OR_FOLLOWER
            _, fetched = wire.parse_fetch_v4(sock.roundtrip(wire.fetch_v4(topic, 0, 0)))
            assert fetched[0].error_code == NOT_LEADER_OR_FOLLOWER

    # clients bootstrapped from brokers that do not lead find the leader themselves
    producer = Producer({"bootstrap.servers": cluster.brokers[3].bootstrap, "acks": "all"})
    acked = []
    for i in range(50):
        producer.produce(topic, b"%d" % i, on_delivery=lambda e, m: acked.append(
            (e, m.offset())))
    assert producer.flush(30) == 0
    assert acked == [(None, i) for i in range(50)]

    consumer = Consumer({"bootstrap.servers": cluster.brokers[2].bootstrap,
                         "group.id": f"g-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values = []
        wait_until(lambda: values.extend(m.value() for m in consumer.consume(100, 0.5)
                                         if not m.error()) or len(values) >= 50, 30,
                   what="50 records consumed")
        assert values == [b"%d" % i for i in range(50)]
    finally:
        consumer.close()

    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaTopicPartition

    kp = KafkaConsumer(bootstrap_servers=cluster.brokers[3].bootstrap,
                       enable_auto_commit=False, consumer_timeout_ms=10000)
    try:
        kp.assign([KafkaTopicPartition(topic, 0)])
        kp.seek_to_beginning()
        got = []
        for msg in kp:
            got.append(msg.value)
            if len(got) == 50:
                break
        assert got == [b"%d" % i for i in range(50)]
    finally:
        kp.close()


def test_produce_v10_names_the_current_leader(make_cluster):
    cluster = make_cluster(3)
    topic = "hinted"
    create(cluster, topic, assignment=[[1, 2]])
    batch = wire.encode_record_batch([wire.Record(b"misrouted")])
    response = asyncio.run(_produce_v11(cluster.brokers[2].port, topic, batch))
    result = response.responses[0].partition_responses[0]
    assert result.error_code == NOT_LEADER_OR_FOLLOWER
    assert result.current_leader.leader_id == 1
    assert result.current_leader.leader_epoch >= 0
    assert [(n.node_id, n.port) for n in response.node_endpoints] == \
        [(1, cluster.brokers[1].port)]


def test_sigterm_moves_leadership_before_exit(make_cluster):
    cluster = make_cluster(3, {"replica.lag.time.max.ms": 4000})
    topic = "handover"
    cluster.create_topic(topic, 3, 3, {"min.insync.replicas": "2"})
    victim = cluster.leader_of(topic, 0)

    with BackgroundProducer(cluster.bootstrap, topic, 3) as producer:
        producer.wait_for_acks(500, timeout=30)
        assert cluster.brokers[victim].stop() == 0  # SIGTERM; returns once it has exited
        md = cluster.metadata(topic)
        leaders = {p: md.topics[topic].partitions[p].leader for p in range(3)}
        assert all(leader not in (victim, -1) for leader in leaders.values()), leaders
        assert "Controlled shutdown: leadership moved away" in \
            cluster.brokers[victim].log_text(current_run_only=True)
        producer.wait_for_acks(500, timeout=30)
        cluster.restart(victim)
        for p in range(3):
            cluster.wait_for_isr(topic, p, set(cluster.brokers))
        producer.wait_for_acks(300, timeout=30)

    assert not producer.errors, producer.errors[:5]
    ends = {p: cluster.high_watermark(topic, p) for p in range(3)}
    records = read_partitions(cluster.bootstrap, topic, ends)
    at = {(p, offset): value for p in records for offset, _, value in records[p]}
    for p, offset, seq in producer.acked:
        assert at.get((p, offset)) == b"%d" % seq, f"acknowledged {seq} lost"
    assert len(set(at.values())) == len(at)  # no record twice


def test_deleted_topic_leaves_no_partition_directories(make_cluster):
    cluster = make_cluster(3)
    topic = "doomed"
    create(cluster, topic, 3, 3)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(300):
        producer.produce(topic, b"%d" % i, partition=i % 3)
    assert producer.flush(30) == 0
    del producer

    def dirs(nodes) -> list[str]:
        return [str(cluster.partition_dir(b, topic, p)) for b in nodes for p in range(3)
                if cluster.partition_dir(b, topic, p).exists()]

    assert len(dirs(cluster.brokers)) == 9
    cluster.stop(3)
    admin = cluster.admin()
    admin.delete_topics([topic])[topic].result(timeout=30)
    wait_until(lambda: not dirs([1, 2]), 30, what="partition directories removed")
    assert topic not in cluster.metadata().topics
    assert len(dirs([3])) == 3  # broker 3 was down

    cluster.restart(3)
    wait_until(lambda: not dirs([3]), 30, what="broker 3's stray directories removed")
    # the name can be used again, with fresh, empty partitions
    create(cluster, topic, 3, 3)
    assert all(cluster.high_watermark(topic, p) == 0 for p in range(3))
