"""A cluster on a three-member ZooKeeper ensemble, under an idempotent acks=all producer:

- one member down changes nothing: records are acknowledged and a topic can be created;
- the majority down stops controller work, but leaders keep acknowledging acks=all writes
  their (unchanged) ISR can replicate, as Kafka on ZooKeeper does;
- when the quorum is back every broker is registered, controller work resumes (a topic is
  created), and the checker finds nothing lost, duplicated or divergent.
"""

from __future__ import annotations

import pytest

from strom.testing.chaos import GroupConsumer, check, settle
from strom.testing.cluster import BackgroundProducer, wait_until

pytestmark = pytest.mark.timeout(240)

TOPIC = "quorum"


def test_cluster_rides_out_zookeeper_member_and_majority_loss(make_chaos, ensemble):
    chaos = make_chaos(3)
    cluster = chaos.cluster
    cluster.create_topic(TOPIC, 3, 3, {"min.insync.replicas": "2"})
    producer = BackgroundProducer(cluster.bootstrap, TOPIC, 3, records_per_tick=10)
    consumer = GroupConsumer(cluster.bootstrap, TOPIC).start()
    down: list[int] = []
    try:
        with producer:
            producer.wait_for_acks(200, timeout=60)
            down.append(1)
            ensemble.kill(1)
            producer.wait_for_acks(300, timeout=60)
            cluster.create_topic("with-one-member-down", 1, 3)

            down.append(2)
            ensemble.kill(2)
            wait_until(lambda: ensemble.serving() == [], 30, what="the quorum lost")
            acked = producer.wait_for_acks(300, timeout=60)
            print(f"{acked} acknowledged with the ZooKeeper majority down")

            for member in down:
                ensemble.start_member(member)
            down.clear()
            ensemble.wait_for_quorum()
            settle(cluster, TOPIC, 3)
            cluster.create_topic("after-quorum-returned", 1, 3)
            producer.wait_for_acks(300, timeout=60)
    finally:
        consumer.stop()
        for member in down:
            ensemble.start_member(member)
        ensemble.wait_for_quorum()
    assert not producer.errors, producer.errors[:5]
    verdict = check(cluster, producer, faults=2, consumer=consumer)
    assert verdict.ok, verdict.details()
