"""A broker's registration (/brokers/ids/<id>) after a crash, and a broker id in use.

A broker records the id of the ZooKeeper session that registered it in its first log dir
(`zookeeper-session-id`). Restarted after kill -9, it finds its old registration (and
/controller, if it held the office) still owned by that session, which lives on until it
expires; as the old process no longer holds the log dir lock, those nodes are its own
leftovers and are replaced at once instead of waited out. A registration of any other
session (another live broker with the same id) is still waited for and then refused.

The clusters here run with zookeeper.session.timeout.ms=60000 while a broker process must
be listening within 30 s of its start: a restart that waited for the old session would fail.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from strom.testing.broker import BrokerProcess, BrokerStartError
from strom.testing.cluster import BackgroundProducer, read_partitions, wait_until

pytestmark = pytest.mark.timeout(150)

SESSION_MS = 60000


def test_leader_restarted_after_kill9_replaces_its_registration(make_cluster):
    cluster = make_cluster(3, session_timeout_ms=SESSION_MS)
    cluster.create_topic("t", 3, 3, {"min.insync.replicas": "2"})
    victim = cluster.leader_not_controller("t", 3)

    with BackgroundProducer(cluster.bootstrap, "t", 3) as producer:
        producer.wait_for_acks(300, timeout=30)
        cluster.restart(victim, crash=True)  # listening within 30 s, or this raises
        cluster.wait_for_brokers(set(cluster.brokers), timeout=20)
        for p in range(3):  # it caught up and rejoined every ISR
            cluster.wait_for_isr("t", p, set(cluster.brokers), timeout=30)
        producer.wait_for_acks(300, timeout=25)
    assert not producer.errors, producer.errors[:5]

    log = cluster.brokers[victim].log_text(current_run_only=True)
    assert f"Removing /brokers/ids/{victim} of this broker's previous run" in log
    assert "Waiting for /brokers/ids" not in log
    ends = {p: cluster.high_watermark("t", p) for p in range(3)}
    records = {(p, offset): (key, value) for p, rows in
               read_partitions(cluster.bootstrap, "t", ends).items()
               for offset, key, value in rows}
    for p, offset, seq in producer.acked:
        assert records[(p, offset)] == (b"k%d" % seq, b"%d" % seq)


def test_lone_controller_restarted_after_kill9_takes_the_office_again(make_cluster):
    """With one broker nobody else clears /controller: the restarted broker removes the
    node its previous run left and is the controller again, so topics can be made."""
    cluster = make_cluster(1, session_timeout_ms=SESSION_MS)
    cluster.create_topic("before", 1, 1)
    assert cluster.controller_id() == 1
    cluster.restart(1, crash=True)
    log = cluster.brokers[1].log_text(current_run_only=True)
    assert "Removing /brokers/ids/1 of this broker's previous run" in log
    assert "Removing /controller of this broker's previous run" in log
    wait_until(lambda: cluster.controller_id() == 1, 20, what="broker 1 controller again")

    cluster.create_topic("after", 1, 1)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    p.produce("after", b"v", partition=0)
    assert p.flush(20) == 0
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "g",
                  "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition("after", 0, 0)])
        msg = None
        for _ in range(100):
            msg = c.poll(0.2)
            if msg is not None and msg.error() is None:
                break
        assert msg is not None and msg.error() is None and msg.value() == b"v"
    finally:
        c.close()


def test_a_broker_id_registered_by_another_live_broker_is_refused(make_cluster):
    """A second broker with the same node.id (its own log dir, so no recorded session):
    it waits for the registration to go, then exits; the first broker is not disturbed."""
    cluster = make_cluster(1, session_timeout_ms=4000)
    first = cluster.brokers[1]
    twin = BrokerProcess(overrides=cluster.overrides, node_id=1, startup_timeout=30.0)
    try:
        with pytest.raises(BrokerStartError):
            twin.start()
        log = twin.log_text()
        assert "Waiting for /brokers/ids/1 of a previous session to expire" in log
        assert "Broker id 1 is registered by another live broker" in log
        assert "Removing /brokers/ids" not in log
    finally:
        twin.close()
    assert first.is_alive()
    assert cluster.registered_brokers() == {1}
    cluster.create_topic("still", 1, 1)
