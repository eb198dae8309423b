"""EmbeddedBroker (strom.testing.embedded) used the way an application's tests use it: from
confluent-kafka, kafka-python and aiokafka, sync and async; restart keeps the data; bad
input fails at start with a clear exception."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from strom import EmbeddedBroker, EmbeddedBrokerError


def _consume(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
    finally:
        consumer.close()
    return values


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for v in values:
        producer.produce(topic, v)
    assert producer.flush(30) == 0


def test_confluent_kafka_and_restart_keeps_data():
    with EmbeddedBroker(config={"num.partitions": 3}) as broker:
        topic = broker.create_topic()
        md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=10)
        assert len(md.topics[topic].partitions) == 1
        auto = f"auto-{uuid.uuid4().hex[:8]}"  # auto-created: num.partitions applies
        _produce(broker.bootstrap, auto, [b"x"])
        md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(auto, timeout=10)
        assert len(md.topics[auto].partitions) == 3

        values = [b"v%d" % i for i in range(20)]
        _produce(broker.bootstrap, topic, values)
        port, log_dir = broker.port, broker.log_dir
        broker.restart()
        assert (broker.port, broker.log_dir) == (port, log_dir)
        assert _consume(broker.bootstrap, topic, 20) == values
    assert not log_dir.exists()  # its own temp dir is removed at close


def test_kafka_python():
    from kafka import KafkaConsumer, KafkaProducer

    with EmbeddedBroker() as broker:
        topic = broker.create_topic(partitions=2)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for i in range(10):
            producer.send(topic, b"k%d" % i, partition=i % 2)
        producer.flush(30)
        producer.close()
        consumer = KafkaConsumer(topic, bootstrap_servers=broker.bootstrap,
                                 auto_offset_reset="earliest", consumer_timeout_ms=30000)
        got = []
        for message in consumer:
            got.append(message.value)
            if len(got) == 10:
                break
        consumer.close()
        got.sort()
        assert got == sorted(b"k%d" % i for i in range(10))


def test_aiokafka_async_with():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def main() -> list[bytes]:
        async with EmbeddedBroker() as broker:
            topic = broker.create_topic()
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            try:
                for i in range(5):
                    await producer.send_and_wait(topic, b"a%d" % i)
            finally:
                await producer.stop()
            consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap,
                                        auto_offset_reset="earliest")
            await consumer.start()
            got: list[bytes] = []
            try:
                async with asyncio.timeout(30):
                    async for msg in consumer:
                        got.append(msg.value)
                        if len(got) == 5:
                            break
            finally:
                await consumer.stop()
            return got

    assert asyncio.run(main()) == [b"a%d" % i for i in range(5)]


def test_process_mode_crash_restart_keeps_acked_data():
    with EmbeddedBroker(mode="process") as broker:
        topic = broker.create_topic()
        _produce(broker.bootstrap, topic, [b"p1", b"p2"])
        broker.restart(crash=True)  # SIGKILL, then recovery of the log on start
        assert _consume(broker.bootstrap, topic, 2) == [b"p1", b"p2"]


def test_unknown_config_key_fails_at_once():
    with pytest.raises(EmbeddedBrokerError, match="num.partitons"):
        EmbeddedBroker(config={"num.partitons": 3})
    with pytest.raises(EmbeddedBrokerError, match="num.partitions"):
        EmbeddedBroker(config={"num.partitions": "many"})


def test_port_in_use_fails_at_start():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        broker = EmbeddedBroker(port=port)
        with pytest.raises(EmbeddedBrokerError, match="could not start"):
            broker.start()
        assert not broker.running
        broker.close()


def test_unusable_log_dir_fails_at_start(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    for mode in ("thread", "process"):
        broker = EmbeddedBroker(log_dir=not_a_dir, mode=mode, startup_timeout=20)
        with pytest.raises(EmbeddedBrokerError):
            broker.start()
        broker.close()
    assert not_a_dir.read_text() == "x"  # a caller's path is never removed


def test_import_strom_stays_lazy():
    code = ("import sys, strom; assert 'strom.testing.embedded' not in sys.modules; "
            "from strom import EmbeddedBroker; print(EmbeddedBroker.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "strom.testing.embedded"
