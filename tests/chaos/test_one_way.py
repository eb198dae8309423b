"""One-way partitions (the `one-way-brokers` and `one-way-zk` faults): bytes flow in one
direction only, as when IP packets one way are dropped while TCP keeps the connection
open.

- A leader whose answers to a follower are lost (the follower's fetches reach it, the data
  never comes back): the follower leaves the ISR although the leader hears from it, writes
  go on with the third broker, and after healing it catches up.
- A follower whose requests to the leader are lost (the reverse): the same.
- The controller hears nothing from ZooKeeper while ZooKeeper gets its pings and requests
  (`from-zk`): its session stays alive, so no other broker takes the office.
- A leader whose bytes to ZooKeeper are lost (`to-zk`): its session expires and its
  leaderships move, although its connections stay open.

Under an idempotent acks=all producer (RF=3, min.insync.replicas=2) and a committing group
consumer; the checker then finds nothing lost, duplicated or reordered, and every replica
byte-identical below the high watermark.
"""

from __future__ import annotations

import time

import pytest

from strom.testing.chaos import GroupConsumer, check, settle
from strom.testing.cluster import BackgroundProducer, wait_until
from strom.testing.nemesis import Fault

pytestmark = pytest.mark.timeout(300)

TOPIC = "one-way"


def test_one_way_partitions(make_chaos):
    chaos = make_chaos(3)
    cluster, nemesis = chaos.cluster, chaos.nemesis
    cluster.create_topic(TOPIC, 3, 3, {"min.insync.replicas": "2"})
    producer = BackgroundProducer(cluster.bootstrap, TOPIC, 3, records_per_tick=10)
    consumer = GroupConsumer(cluster.bootstrap, TOPIC).start()
    faults = 0

    def hold(fault: Fault, until, what: str) -> None:
        nonlocal faults
        nemesis.inject(fault)
        faults += 1
        try:
            wait_until(until, 60, interval=0.5, what=what)
        finally:
            nemesis.heal()
        settle(cluster, TOPIC, 3)
        producer.wait_for_acks(300, timeout=90)

    try:
        with producer:
            producer.wait_for_acks(200, timeout=60)
            for lost_way in ("answers", "requests"):
                leader = cluster.leader_of(TOPIC, 0)
                follower = next(b for b in sorted(cluster.brokers) if b != leader)
                # answers: the leader's bytes to the follower are lost; requests: the
                # follower's bytes to the leader are
                fault = Fault("one-way-brokers", leader, 0, follower) if lost_way == \
                    "answers" else Fault("one-way-brokers", follower, 0, leader)
                hold(fault, lambda f=follower: f not in cluster.isr_of(TOPIC, 0) and
                     len(cluster.isr_of(TOPIC, 0)) == 2,
                     f"broker {follower} out of p0's ISR ({lost_way} lost)")
            controller = cluster.controller_id()
            nemesis.inject(Fault("one-way-zk", controller, 0, direction="from-zk"))
            faults += 1
            try:
                time.sleep(8)  # twice the session timeout: ZooKeeper still hears it
                producer.wait_for_acks(100, timeout=60)
                assert cluster.controller_id() == controller  # its session lives on
            finally:
                nemesis.heal()
            settle(cluster, TOPIC, 3)
            producer.wait_for_acks(300, timeout=90)
            leader = cluster.leader_of(TOPIC, 1)
            hold(Fault("one-way-zk", leader, 0, direction="to-zk"),
                 lambda b=leader: cluster.leader_of(TOPIC, 1) not in (b, -1),
                 f"p1's leadership to move off broker {leader}")
    finally:
        consumer.stop()
    assert not producer.errors, producer.errors[:5]
    verdict = check(cluster, producer, faults=faults, consumer=consumer)
    assert verdict.ok, verdict.details()
