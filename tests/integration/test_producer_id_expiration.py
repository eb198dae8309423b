"""Producer state expires (issue 10, defect 9): an idempotent producer's sequence state is
forgotten producer.id.expiration.ms after its last batch, checked every
producer.id.expiration.check.interval.ms, as in Kafka. Before, an id a client made up was
remembered forever: its out-of-order sequence was refused however long it waited.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import ConfigResource, ConfigSource

from strom.testing import wire
from strom.testing.kafka import admin_client, create_topic

pytestmark = pytest.mark.timeout(60)

OUT_OF_ORDER_SEQUENCE = 45
PID = 987654321
EXPIRY_MS = 1500


def produce(sock: wire.KafkaSocket, topic: str, seq: int) -> int:
    batch = wire.encode_record_batch([wire.Record(b"v%d" % seq)], producer_id=PID,
                                     producer_epoch=0, base_sequence=seq)
    _, results = wire.parse_produce(sock.roundtrip(wire.produce(topic, 0, batch)))
    return results[0].error_code


def test_idle_producer_state_expires(start_broker, topic_name):
    broker = start_broker({"producer.id.expiration.ms": EXPIRY_MS,
                           "producer.id.expiration.check.interval.ms": 100})
    create_topic(broker.bootstrap, topic_name)
    with wire.KafkaSocket("127.0.0.1", broker.port) as sock:
        assert produce(sock, topic_name, 0) == 0
        assert produce(sock, topic_name, 5) == OUT_OF_ORDER_SEQUENCE  # remembered
        deadline = time.monotonic() + 20
        while produce(sock, topic_name, 5) != 0:  # accepted once the state is forgotten
            assert time.monotonic() < deadline, "the producer's state never expired"
            time.sleep(0.1)  # poll interval of the bounded wait above

    resource = ConfigResource(ConfigResource.Type.BROKER, "1")
    admin = admin_client(broker.bootstrap)  # kept alive until the result is in
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    expiration = configs["producer.id.expiration.ms"]
    assert expiration.value == str(EXPIRY_MS)
    assert expiration.source == ConfigSource.STATIC_BROKER_CONFIG.value
    # internal in Kafka: listed because it is set here
    assert configs["producer.id.expiration.check.interval.ms"].value == "100"
