"""EmbeddedCluster and the plugin's `kafka_cluster` fixture, run by pytest through
`pytester`: a replicated topic survives the restart of its leader."""

from __future__ import annotations

import pytest

from strom.testing.zookeeper import find_zookeeper

pytest_plugins = ["pytester"]

CLUSTER_TEST = '''
from confluent_kafka import Consumer, Producer


def test_replicated(kafka_cluster):
    topic = kafka_cluster.create_topic(partitions=1)  # replicated on all 3 brokers
    producer = Producer({"bootstrap.servers": kafka_cluster.bootstrap, "acks": "all"})
    for i in range(10):
        producer.produce(topic, b"%d" % i)
    assert producer.flush(30) == 0
    leader = kafka_cluster.cluster.leader_of(topic, 0)
    kafka_cluster.restart_broker(leader, crash=True)
    consumer = Consumer({"bootstrap.servers": kafka_cluster.bootstrap, "group.id": "g",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = []
    try:
        for _ in range(120):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
            if len(got) == 10:
                break
    finally:
        consumer.close()
    assert got == [b"%d" % i for i in range(10)]
'''


@pytest.mark.skipif(find_zookeeper() is None, reason="ZooKeeper is not installed")
def test_kafka_cluster_fixture(pytester: pytest.Pytester):
    pytester.makepyfile(test_cluster=CLUSTER_TEST)
    result = pytester.runpytest_subprocess("-p", "strom.testing.pytest_plugin", "-q",
                                           timeout=240)
    result.assert_outcomes(passed=1)


def test_missing_zookeeper_is_a_clear_error(monkeypatch):
    from strom.testing import embedded, zookeeper

    monkeypatch.setattr(zookeeper, "find_zookeeper", lambda: None)
    with pytest.raises(embedded.EmbeddedBrokerError, match="apt-get install zookeeper"):
        embedded.EmbeddedCluster(brokers=3)
