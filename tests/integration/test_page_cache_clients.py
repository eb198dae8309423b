"""log.page.cache.window.bytes against real clients: a broker that keeps only 1 MiB of each
segment cached still serves every record, in order and intact, to consumers reading from the
beginning (cold reads, off the event loop) with confluent-kafka, kcat and, after a restart
(every byte then predates the process), kafka-python; the segment's cache stays bounded; the
setting is listed by DescribeConfigs, and invalid values are a clear startup error."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from kafka import KafkaConsumer, TopicPartition

from strom.testing.broker import BrokerProcess, BrokerStartError
from strom.testing.kafka import consume_partition, create_topic
from strom.testing.page_cache import dontneed_honoured, resident_bytes

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

RECORDS = 20_000
MIB = 1 << 20


def value(i: int) -> bytes:
    return (b"%08d" % i) * 125  # 1000 bytes, each record's own


def test_records_behind_the_window_are_served_intact_by_every_client(start_broker,
                                                                    topic_name):
    b = start_broker({"log.page.cache.window.bytes": MIB})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    res = ConfigResource(ResourceType.BROKER, "1")
    entries = admin.describe_configs([res], request_timeout=15)[res].result(timeout=15)
    assert entries["log.page.cache.window.bytes"].value == str(MIB)

    create_topic(b.bootstrap, topic_name, 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(RECORDS):
        p.produce(topic_name, value=value(i), key=b"%d" % i, partition=0)
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0

    segment = b.log_dir / f"{topic_name}-0" / ("0" * 20 + ".log")
    size = segment.stat().st_size
    assert size > 19 * MIB
    if dontneed_honoured(b.log_dir):  # the broker's advice really let the bytes go
        assert resident_bytes(segment) < size // 2

    msgs = consume_partition(b.bootstrap, topic_name, 0, count=RECORDS, timeout=60)
    assert [m.offset() for m in msgs] == list(range(RECORDS))
    assert all(m.value() == value(i) and m.key() == b"%d" % i for i, m in enumerate(msgs))

    kcat = shutil.which("kcat")
    if kcat:
        out = subprocess.run([kcat, "-C", "-b", b.bootstrap, "-t", topic_name, "-p", "0",
                              "-o", "beginning", "-e", "-q", "-f", "%o %s\n"],
                             capture_output=True, timeout=60, check=True).stdout
        lines = out.splitlines()
        assert len(lines) == RECORDS
        assert all(line == b"%d %s" % (i, value(i)) for i, line in enumerate(lines))

    # after a restart every byte predates the process: all of it is read as cold
    assert b.stop() == 0
    b.start()
    consumer = KafkaConsumer(bootstrap_servers=b.bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic_name, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        got = []
        while len(got) < RECORDS:
            batch = consumer.poll(timeout_ms=10_000).get(tp, [])
            assert batch, f"no records after {len(got)}"
            got.extend(batch)
    finally:
        consumer.close()
    assert [(r.offset, r.value) for r in got] == [(i, value(i)) for i in range(RECORDS)]
    assert b.is_alive() and "Traceback" not in b.log_text()


@pytest.mark.parametrize("raw", ["-2", "lots"])
def test_invalid_window_is_a_clear_startup_error(raw):
    b = BrokerProcess(overrides={"log.page.cache.window.bytes": raw}, startup_timeout=15)
    try:
        with pytest.raises(BrokerStartError):
            b.start()
        assert b.returncode not in (None, 0)
        text = b.log_text(current_run_only=True)
        assert "log.page.cache.window.bytes" in text and "Traceback" not in text, text
    finally:
        b.close()
