"""Admin requests while the broker cannot reach ZooKeeper.

A request the controller cannot finish because ZooKeeper does not answer within
zookeeper.connection.timeout.ms is answered with REQUEST_TIMED_OUT (retriable, as in
Kafka), never by closing the client's connection; FindCoordinator and InitProducerId
answer their retriable errors; once ZooKeeper answers again the same requests succeed.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from strom.testing.cluster import Cluster
from strom.testing.zookeeper import TcpProxy

pytestmark = pytest.mark.timeout(90)


def _error_of(future, timeout: float = 30) -> KafkaError:
    with pytest.raises(KafkaException) as info:
        future.result(timeout=timeout)
    return info.value.args[0]


def test_admin_requests_time_out_cleanly_while_zookeeper_is_unreachable(zookeeper, request):
    with TcpProxy(zookeeper.port) as proxy:
        cluster = Cluster(proxy.connect_string, 1, {"zookeeper.connection.timeout.ms": 1500},
                          session_timeout_ms=30000)
        request.node._strom_brokers = list(cluster.brokers.values())
        try:
            cluster.start()
            cluster.create_topic("before", 1, 1)
            admin = AdminClient({"bootstrap.servers": cluster.bootstrap})

            proxy.hold()  # ZooKeeper gets nothing and answers nothing
            err = _error_of(admin.create_topics([NewTopic("during", 1, 1)])["during"])
            assert err.code() == KafkaError.REQUEST_TIMED_OUT, err
            assert "metadata store did not answer" in err.str(), err
            err = _error_of(admin.create_partitions([NewPartitions("before", 2)])["before"])
            assert err.code() == KafkaError.REQUEST_TIMED_OUT, err
            err = _error_of(admin.delete_topics(["before"])["before"])
            assert err.code() == KafkaError.REQUEST_TIMED_OUT, err
            err = _error_of(admin.describe_user_scram_credentials(["alice"])["alice"])
            assert err.code() == KafkaError.REQUEST_TIMED_OUT, err
            # the client's connection is still open and served
            assert "before" in admin.list_topics(timeout=10).topics
            # an idempotent producer needs a producer id block from ZooKeeper:
            # InitProducerId answers COORDINATOR_LOAD_IN_PROGRESS and the client asks again
            producer = Producer({"bootstrap.servers": cluster.bootstrap,
                                 "enable.idempotence": True})
            delivered: list = []
            producer.produce("before", b"idempotent",
                             on_delivery=lambda err, msg: delivered.append(err))
            producer.poll(3)
            assert delivered == []
            # the first consumer group needs __consumer_offsets, which cannot be created
            # now: FindCoordinator answers COORDINATOR_NOT_AVAILABLE, the client asks again
            consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "g",
                                 "auto.offset.reset": "earliest"})
            try:
                consumer.subscribe(["before"])
                consumer.poll(3)
                assert consumer.assignment() == []

                proxy.restore()
                admin.create_topics([NewTopic("during", 1, 1)])["during"].result(timeout=30)
                assert "during" in admin.list_topics(timeout=10).topics
                deadline = time.monotonic() + 30
                while not consumer.assignment() and time.monotonic() < deadline:
                    consumer.poll(0.5)
                assert [(p.topic, p.partition) for p in consumer.assignment()] == \
                    [("before", 0)]
                assert producer.flush(30) == 0
                assert delivered == [None]
            finally:
                consumer.close()
            for broker in cluster.brokers.values():
                assert "Unexpected error" not in broker.log_text()
                assert "Closing connection from" not in broker.log_text()
        finally:
            cluster.close()
