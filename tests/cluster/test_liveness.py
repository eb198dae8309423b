"""A dead broker is noticed before its ZooKeeper session expires (cluster/liveness.py).

The clusters here run with zookeeper.session.timeout.ms=60000, so anything that happens
within the tests' 25 s waits happened before ZooKeeper could have told: the killed broker's
`/brokers/ids/<id>` is checked to still be there when the failover is seen.

- kill -9 of a leader: another ISR member leads, Metadata leaves the dead broker out,
  acks=all producing goes on and every acknowledged record is read back;
- kill -9 of the controller: another broker takes the office and moves its leaderships;
- a broker frozen with SIGSTOP (its port still accepts connections) is not judged dead:
  that is left to its session, as in Kafka.
"""

from __future__ import annotations

import time

import pytest
from kazoo.client import KazooClient

from strom.testing.cluster import BackgroundProducer, read_partitions, wait_until

pytestmark = pytest.mark.timeout(150)

SESSION_MS = 60000


def registered_in_zookeeper(cluster, node_id: int) -> bool:
    zk = KazooClient(hosts=cluster.zk_connect)
    zk.start(timeout=10)
    try:
        return zk.exists(f"/brokers/ids/{node_id}") is not None
    finally:
        zk.stop()
        zk.close()


def test_killed_leader_replaced_before_its_session_expires(make_cluster):
    cluster = make_cluster(3, session_timeout_ms=SESSION_MS)
    cluster.create_topic("t", 3, 3, {"min.insync.replicas": "2"})
    controller = cluster.controller_id()
    victim = cluster.leader_not_controller("t", 3)
    led = [p for p in range(3) if cluster.leader_of("t", p) == victim]

    with BackgroundProducer(cluster.bootstrap, "t", 3) as producer:
        producer.wait_for_acks(300, timeout=30)
        cluster.kill(victim)
        for p in led:
            assert cluster.wait_for_leader("t", p, timeout=25, not_on=victim) != victim
        # ZooKeeper still has the dead broker: it was the closed port that told
        assert registered_in_zookeeper(cluster, victim)
        assert victim not in cluster.registered_brokers()  # Metadata leaves it out
        for p in range(3):
            assert victim not in cluster.isr_of("t", p)
        producer.wait_for_acks(300, timeout=25)
    assert not producer.errors, producer.errors[:5]

    ends = {p: cluster.high_watermark("t", p) for p in range(3)}
    records = {(p, offset): (key, value) for p, rows in
               read_partitions(cluster.live_bootstrap(), "t", ends).items()
               for offset, key, value in rows}
    for p, offset, seq in producer.acked:
        assert records[(p, offset)] == (b"k%d" % seq, b"%d" % seq)
    log = cluster.brokers[controller].log_text(current_run_only=True)
    assert f"Broker {victim} is dead" in log


def test_killed_controller_replaced_before_its_session_expires(make_cluster):
    cluster = make_cluster(3, session_timeout_ms=SESSION_MS)
    cluster.create_topic("t", 3, 3)
    old = cluster.controller_id()
    led = [p for p in range(3) if cluster.leader_of("t", p) == old]
    assert led, "the controller leads one of the three partitions (round-robin placement)"

    cluster.kill(old)
    new = wait_until(lambda: (c := cluster.controller_id()) not in (old, -1) and c, 25,
                     what="a new controller")
    for p in led:
        assert cluster.wait_for_leader("t", p, timeout=25, not_on=old) != old
    assert registered_in_zookeeper(cluster, old)
    assert cluster.registered_brokers() == set(cluster.brokers) - {old}
    # the office works: a topic can still be made, on the two brokers left
    cluster.create_topic("after", 2, 2)
    assert new in cluster.brokers and cluster.brokers[new].is_alive()


def test_frozen_broker_is_left_to_its_session(make_cluster):
    """SIGSTOP: the kernel still accepts connections on the broker's port, so nothing
    proves it dead; it keeps its leaderships (its partitions stall, as in Kafka, until
    its session expires or it wakes)."""
    cluster = make_cluster(3, session_timeout_ms=SESSION_MS)
    cluster.create_topic("t", 3, 3)
    controller = cluster.controller_id()
    victim = next(b for b in cluster.brokers if b != controller)
    led = [p for p in range(3) if cluster.leader_of("t", p) == victim]
    cluster.pause(victim)
    try:
        time.sleep(3)  # long enough for a dead broker to be found (about 0.1 s)
        md = cluster.admin().list_topics(topic="t", timeout=10)
        assert victim in md.brokers
        for p in led:
            assert md.topics["t"].partitions[p].leader == victim
    finally:
        cluster.resume(victim)
    assert "is dead" not in cluster.brokers[controller].log_text(current_run_only=True)
