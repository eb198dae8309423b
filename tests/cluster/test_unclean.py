"""unclean.leader.election.enable: who may lead when no in-sync replica is alive.

Both tests shrink the ISR of an RF=3, min.insync.replicas=2 partition to its leader alone
(the followers are stopped), produce with acks=1 to that leader only, then kill it and
bring back a follower that missed those records (a stale replica):

- false (the default): the partition stays offline (Metadata: LEADER_NOT_AVAILABLE,
  leader -1; the stale replica serves nothing) until the last in-sync replica returns and
  leads again; no acknowledged record is missing.
- true (topic config): the stale replica leads at once (the controller warns that records
  may be lost); when the old leader returns it truncates its divergent tail and becomes an
  exact copy of the new leader.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, Producer

from strom.testing import wire
from strom.testing.cluster import read_partitions, wait_until

pytestmark = pytest.mark.timeout(120)

TOPIC = "t"
NOT_LEADER_OR_FOLLOWER = 6


def produce(bootstrap: str, values: list[bytes], acks: str) -> dict[bytes, int]:
    """Produce to partition 0, every record acknowledged: {value: offset}."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": acks,
                         "enable.idempotence": False, "linger.ms": 5,
                         "message.timeout.ms": 30000})
    acked: dict[bytes, int] = {}
    errors: list = []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = msg.offset()
        else:
            errors.append(err)

    for v in values:
        producer.produce(TOPIC, v, partition=0, on_delivery=on_delivery)
    assert producer.flush(45) == 0
    assert not errors, errors[:3]
    return acked


def partition_metadata(cluster):
    return cluster.metadata(TOPIC).topics[TOPIC].partitions[0]


def shrink_to_leader(cluster, config: dict[str, str]):
    """Create the topic, produce acks=all, stop both followers, produce acks=1 to the
    leader alone. Returns (leader, first follower stopped, second follower stopped, acked
    with acks=all, acked with acks=1 only by the leader)."""
    cluster.create_topic(TOPIC, 1, 3, {"min.insync.replicas": "2", **config})
    leader = cluster.leader_of(TOPIC, 0)
    stale, last_follower = [b for b in partition_metadata(cluster).replicas if b != leader]

    acked_all = produce(cluster.live_bootstrap(), [b"all-%d" % i for i in range(200)], "all")
    cluster.stop(stale)
    cluster.wait_for_isr(TOPIC, 0, {leader, last_follower})
    # acks=all still works with two in sync; the stale replica misses these
    acked_all |= produce(cluster.live_bootstrap(), [b"all-%d" % i for i in range(200, 300)],
                         "all")
    cluster.stop(last_follower)
    cluster.wait_for_isr(TOPIC, 0, {leader})
    acked_one = produce(cluster.live_bootstrap(), [b"one-%d" % i for i in range(100)], "1")
    return leader, stale, last_follower, acked_all, acked_one


def test_no_unclean_election_partition_stays_offline_until_isr_member_returns(
        make_cluster):
    cluster = make_cluster(3, {"replica.lag.time.max.ms": 3000})
    leader, stale, last_follower, acked_all, acked_one = shrink_to_leader(cluster, {})

    cluster.kill(leader)
    cluster.restart(stale)
    # the controller (now on the stale replica, the only live broker) takes the
    # partition offline once the dead leader's session is gone ...
    def offline():
        p = partition_metadata(cluster)
        return p.leader == -1 and p.error is not None and \
            p.error.code() == KafkaError.LEADER_NOT_AVAILABLE
    wait_until(offline, 30, what="partition offline")
    # ... and keeps it offline: the stale replica never leads, never serves
    for _ in range(10):
        p = partition_metadata(cluster)
        assert p.leader == -1, f"stale replica {p.leader} was elected"
        assert p.error.code() == KafkaError.LEADER_NOT_AVAILABLE
        time.sleep(0.3)
    with wire.KafkaSocket("127.0.0.1", cluster.brokers[stale].port) as sock:
        _, results = wire.parse_fetch_v4(sock.roundtrip(wire.fetch_v4(TOPIC, 0, 0)))
        assert results[0].error_code == NOT_LEADER_OR_FOLLOWER
        assert not results[0].records
        _, produced = wire.parse_produce(sock.roundtrip(wire.produce(
            TOPIC, 0, wire.encode_record_batch([wire.Record(b"x")]), acks=1)))
        assert produced[0].error_code == NOT_LEADER_OR_FOLLOWER

    # the last in-sync replica returns and leads; the stale one catches up from it
    cluster.restart(leader)
    assert cluster.wait_for_leader(TOPIC, 0, timeout=30) == leader
    cluster.wait_for_isr(TOPIC, 0, {leader, stale})
    end = cluster.high_watermark(TOPIC, 0)
    records = read_partitions(cluster.live_bootstrap(), TOPIC, {0: end})[0]
    by_value = {value: offset for offset, _, value in records}
    assert len(by_value) == len(records) == end
    for value, offset in acked_all.items():
        assert by_value.get(value) == offset, f"acknowledged {value!r} lost"
    # the leader had the acks=1 records too: nothing was lost at all
    for value, offset in acked_one.items():
        assert by_value.get(value) == offset
    assert "Unclean leader election" not in "".join(
        b.log_text() for b in cluster.brokers.values())

    cluster.restart(last_follower)
    cluster.wait_for_isr(TOPIC, 0, set(cluster.brokers))


def test_unclean_election_lets_a_stale_replica_lead(make_cluster):
    cluster = make_cluster(3, {"replica.lag.time.max.ms": 3000})
    leader, stale, _, acked_all, acked_one = shrink_to_leader(
        cluster, {"unclean.leader.election.enable": "true"})
    stale_end = 200  # the stale replica stopped after the first 200 records

    cluster.kill(leader)
    cluster.restart(stale)
    assert cluster.wait_for_leader(TOPIC, 0, timeout=30) == stale
    assert "Unclean leader election" in cluster.brokers[stale].log_text(current_run_only=True)
    assert cluster.high_watermark(TOPIC, 0) == stale_end
    # the new leader takes writes at the offsets the old leader had used
    # (min.insync.replicas=2 allows only acks=1 with an ISR of one)
    new = produce(cluster.live_bootstrap(), [b"new-%d" % i for i in range(30)], "1")
    assert sorted(new.values()) == list(range(stale_end, stale_end + 30))

    # the old leader returns as a follower: it truncates its divergent tail and copies
    cluster.restart(leader)
    cluster.wait_for_isr(TOPIC, 0, {leader, stale})
    assert cluster.leader_of(TOPIC, 0) == stale
    end = cluster.high_watermark(TOPIC, 0)
    assert end == stale_end + 30
    records = read_partitions(cluster.live_bootstrap(), TOPIC, {0: end})[0]
    values = [value for _, _, value in records]
    assert values[:stale_end] == [v for v, _ in sorted(acked_all.items(),
                                                       key=lambda kv: kv[1])][:stale_end]
    assert values[stale_end:] == [b"new-%d" % i for i in range(30)]
    # what only the old leader and its ISR had is gone: the loss the warning speaks of
    assert not set(values) & set(acked_one)
    wait_until(lambda: cluster.log_bytes(leader, TOPIC, 0, end)
               == cluster.log_bytes(stale, TOPIC, 0, end), 20,
               what="the old leader's log equal to the new leader's")
