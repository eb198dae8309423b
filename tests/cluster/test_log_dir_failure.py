"""KIP-112 in a cluster: a broker whose log dir fills reports it to the controller, which
moves the leaderships of that dir's partitions to other in-sync replicas and takes the
broker out of their ISRs; acks=all producers go on without loss, the broker keeps serving
the partitions in its healthy dir, and after a restart with space back its replica
rejoins the ISR. A partition whose only in-sync replica is in the failed dir goes offline
as in Kafka (leader -1: Metadata answers LEADER_NOT_AVAILABLE and lists the replica in
offline_replicas), the failed dir's partitions answer KAFKA_STORAGE_ERROR to Fetch and
ListOffsets, and the partition is back, with its records, when the broker restarts.

Broker 1 has two log dirs, the first a small tmpfs of the test's own
(strom.testing.nemesis.SmallDisk; skipped where mounting is not allowed).
"""

from __future__ import annotations

import itertools

import pytest
from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata.metadata import MetadataRequest, MetadataResponse

from strom.testing import wire
from strom.testing.chaos import check
from strom.testing.cluster import BackgroundProducer, read_partitions, wait_until
from strom.testing.nemesis import SmallDisk
from tests.cluster.test_log_dirs_tool import log_dirs

pytestmark = pytest.mark.timeout(240)

KAFKA_STORAGE_ERROR = 56
LEADER_NOT_AVAILABLE = 5
_cids = itertools.count(1)


def call(port: int, request, response_class, version: int):
    """One request over a raw socket, encoded and decoded by kafka-python's classes."""
    cid = next(_cids)
    request.with_header(correlation_id=cid, client_id="strom-log-dir-failure")
    with wire.KafkaSocket("127.0.0.1", port) as sock:
        payload = sock.roundtrip(request.encode(version=version, header=True, framed=True))
    response = response_class.decode(payload, version=version, header=True)
    assert response.header.correlation_id == cid
    return response


def metadata_partition(port: int, topic: str):
    """Partition 0 of `topic` as Metadata v9 answers it on the broker at `port`."""
    request = MetadataRequest(topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
                              allow_auto_topic_creation=False)
    answer = call(port, request, MetadataResponse, 9)
    (t,) = answer.topics
    return next(p for p in t.partitions if p.partition_index == 0)


def list_offsets_error(port: int, topic: str) -> int:
    t = ListOffsetsRequest.ListOffsetsTopic
    request = ListOffsetsRequest(replica_id=-1, isolation_level=0, topics=[t(
        name=topic, partitions=[t.ListOffsetsPartition(partition_index=0, timestamp=-1)])])
    answer = call(port, request, ListOffsetsResponse, 5)
    return answer.topics[0].partitions[0].error_code


def fetch_error(port: int, topic: str) -> int:
    with wire.KafkaSocket("127.0.0.1", port) as sock:
        _, results = wire.parse_fetch_v4(sock.roundtrip(wire.fetch_v4(topic, 0, 0)))
    return results[0].error_code


@pytest.fixture
def small_disk():
    if not SmallDisk.available():
        pytest.skip("mounting a tmpfs is not allowed here")
    disk = SmallDisk(16 << 20)
    yield disk
    disk.close()


def produce_one(bootstrap: str, topic: str, value: bytes) -> int:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                  "message.timeout.ms": 30000, "log_level": 2})
    out = []
    p.produce(topic, value=value, partition=0,
              on_delivery=lambda err, msg: out.append(err or msg.offset()))
    assert p.flush(40) == 0
    assert isinstance(out[0], int), out[0]
    return out[0]


def test_failed_log_dir_moves_its_leaderships(make_cluster, small_disk, topic_names,
                                              tmp_path):
    cluster = make_cluster(start=False)
    small, healthy = small_disk.path / "data", tmp_path / "healthy"
    # a partition goes to the dir holding the fewest, ties to the first: the small one
    cluster.add_broker(1, start=False, log_dir=small,
                       overrides={"log.dirs": f"{small},{healthy}"})
    cluster.start()
    on_small, on_healthy = topic_names.new(), topic_names.new()
    only_here = topic_names.new()  # one replica, on broker 1's small dir
    config = {"min.insync.replicas": "2"}
    cluster.create_topic(on_small, 1, 3, config, assignment=[[1, 2, 3]])
    cluster.create_topic(on_healthy, 1, 3, config, assignment=[[1, 2, 3]])
    cluster.create_topic(only_here, 1, 1, {"unclean.leader.election.enable": "false"},
                         assignment=[[1]])
    assert (small / f"{on_small}-0").is_dir() and (healthy / f"{on_healthy}-0").is_dir()
    assert (small / f"{only_here}-0").is_dir()
    kept = produce_one(cluster.bootstrap, only_here, b"kept")

    with BackgroundProducer(cluster.bootstrap, on_small, partitions=1) as producer:
        producer.wait_for_acks(200, timeout=60)
        small_disk.fill()
        # the next append on broker 1 fails: the dir goes offline, the controller moves on
        new_leader = cluster.wait_for_leader(on_small, 0, timeout=60, not_on=1)
        assert new_leader in (2, 3)
        cluster.wait_for_isr(on_small, 0, {2, 3}, timeout=60)
        producer.wait_for_acks(300, timeout=60)  # acks=all goes on with the new leader
    assert cluster.brokers[1].is_alive()
    # broker 1 does not follow its offline replica, so it never rejoins the ISR
    assert set(cluster.isr_of(on_small, 0)) == {2, 3}
    assert "Reported the failed log dir" in cluster.brokers[1].log_text()

    # its only in-sync replica failed: the partition is offline, as Kafka's controller
    # leaves it (OfflinePartition, leader -1), on every broker's Metadata
    wait_until(lambda: cluster.leader_of(only_here, 0) == -1, 60,
               what=f"{only_here}-0 offline")
    assert cluster.isr_of(only_here, 0) == [1]  # kept: broker 1 may lead it again
    for b in (1, 2):
        port = cluster.brokers[b].port
        wait_until(lambda port=port: list(metadata_partition(
            port, only_here).offline_replicas) == [1], 30, what=f"broker {b}'s Metadata")
        part = metadata_partition(port, only_here)
        assert (part.error_code, part.leader_id) == (LEADER_NOT_AVAILABLE, -1)
        assert list(metadata_partition(port, on_small).offline_replicas) == [1]
        assert list(metadata_partition(port, on_healthy).offline_replicas) == []
    # reads of the failed dir's partitions on broker 1 answer KAFKA_STORAGE_ERROR
    port = cluster.brokers[1].port
    for name in (only_here, on_small):
        assert fetch_error(port, name) == KAFKA_STORAGE_ERROR
        assert list_offsets_error(port, name) == KAFKA_STORAGE_ERROR
    assert list_offsets_error(port, on_healthy) == 0

    # the healthy dir is served as before: broker 1 still leads it, with the full ISR
    assert cluster.leader_of(on_healthy, 0) == 1
    assert set(cluster.isr_of(on_healthy, 0)) == {1, 2, 3}
    offset = produce_one(cluster.bootstrap, on_healthy, b"healthy")
    records = read_partitions(cluster.bootstrap, on_healthy, {0: offset + 1})[0]
    assert [v for _, _, v in records] == [b"healthy"]

    # DescribeLogDirs (`strom log-dirs`): the failed dir answers KAFKA_STORAGE_ERROR
    _, answer = log_dirs(cluster.brokers[1].bootstrap, "--broker-list", "1")
    by_dir = {d["logDir"]: d for d in answer["brokers"][0]["logDirs"]}
    assert by_dir[str(small)]["error"] == \
        "org.apache.kafka.common.errors.KafkaStorageException"
    assert by_dir[str(healthy)]["error"] is None
    assert f"{on_healthy}-0" in {p["partition"] for p in by_dir[str(healthy)]["partitions"]}

    small_disk.free()
    cluster.restart(1)
    cluster.wait_for_isr(on_small, 0, {1, 2, 3}, timeout=90)
    # the offline partition is back with broker 1 leading it, and its record is there
    cluster.wait_for_leader(only_here, 0, timeout=60)
    assert cluster.leader_of(only_here, 0) == 1
    assert [v for _, _, v in read_partitions(cluster.bootstrap, only_here,
                                             {0: kept + 1})[0]] == [b"kept"]
    assert list(metadata_partition(cluster.brokers[2].port, on_small).offline_replicas) == []
    verdict = check(cluster, producer, faults=1)
    assert verdict.ok, verdict.details()
    wait_until(lambda: set(cluster.isr_of(on_healthy, 0)) == {1, 2, 3}, 60,
               what="the healthy topic's full ISR")
