"""A partition between two chosen brokers (the `partition-brokers` fault): the follower cut
off from a leader drops out of that partition's ISR while both stay registered in
ZooKeeper and the third broker keeps both links; writes go on (min.insync.replicas=2 is
still met); after healing the follower catches up and the checker finds nothing lost,
duplicated or divergent.
"""

from __future__ import annotations

import pytest

from strom.testing.chaos import GroupConsumer, check, settle
from strom.testing.cluster import BackgroundProducer, wait_until
from strom.testing.nemesis import Fault

pytestmark = pytest.mark.timeout(240)

TOPIC = "cut"


def test_partition_between_two_brokers(make_chaos):
    chaos = make_chaos(3)
    cluster = chaos.cluster
    cluster.create_topic(TOPIC, 3, 3, {"min.insync.replicas": "2"})
    producer = BackgroundProducer(cluster.bootstrap, TOPIC, 3, records_per_tick=10)
    consumer = GroupConsumer(cluster.bootstrap, TOPIC).start()
    try:
        with producer:
            producer.wait_for_acks(200, timeout=60)
            leader = cluster.leader_of(TOPIC, 0)
            follower, third = [b for b in sorted(cluster.brokers) if b != leader][:2]
            chaos.nemesis.inject(Fault("partition-brokers", leader, 10.0, follower))
            try:
                wait_until(lambda: follower not in cluster.isr_of(TOPIC, 0), 60,
                           interval=0.5, what=f"broker {follower} out of p0's ISR")
                # only that link is cut: the third broker still follows the leader
                assert third in cluster.isr_of(TOPIC, 0)
                assert cluster.registered_brokers() == set(cluster.brokers)
                producer.wait_for_acks(300, timeout=60)
            finally:
                chaos.nemesis.heal()
            settle(cluster, TOPIC, 3)
            producer.wait_for_acks(300, timeout=60)
    finally:
        consumer.stop()
    assert not producer.errors, producer.errors[:5]
    verdict = check(cluster, producer, faults=1, consumer=consumer)
    assert verdict.ok, verdict.details()
