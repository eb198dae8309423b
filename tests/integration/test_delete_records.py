"""DeleteRecords (API 21): through confluent-kafka's and kafka-python's admin clients, the
raw protocol (error cases) and `strom delete-records`; then ListOffsets earliest, a consumer
from the beginning and a fetch below the new start answer as Kafka's; a restart keeps it.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from strom.cli._common import broker_request
from strom.protocol.messages import make, request_module, request_schema
from strom.testing import wire
from strom.testing.kafka import create_topic

pytestmark = pytest.mark.timeout(60)

OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
POLICY_VIOLATION = 44


def produce(bootstrap: str, topic: str, n: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(n):
        p.produce(topic, value=b"v%d" % i, partition=0)
        assert p.flush(15) == 0  # one batch per record


def small_segments_topic(bootstrap: str, topic: str, n: int = 50) -> None:
    # one record per batch and ~3 batches per segment
    create_topic(bootstrap, topic, 1, config={"segment.bytes": "256"})
    produce(bootstrap, topic, n)


def earliest(bootstrap: str, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(topic, 0)
    res = admin.list_offsets({tp: OffsetSpec.earliest()}, request_timeout=10)
    return res[tp].result(timeout=15).offset


def first_consumed_offset(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{topic}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c.subscribe([topic])
        for _ in range(150):
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                return m.offset()
        raise AssertionError("nothing consumed")
    finally:
        c.close()


def raw_delete(bootstrap: str, wanted: list[tuple[str, int, int]], version: int = 2,
               timeout_ms: int = 5000) -> dict[tuple[str, int], tuple[int, int]]:
    """{(topic, partition): (error code, low watermark)} of one DeleteRecords request."""
    mod = request_module(21, version)
    topics: dict[str, list] = {}
    for t, p, o in wanted:
        topics.setdefault(t, []).append(make(mod.DeleteRecordsPartition, partition_index=p,
                                             offset=o))
    req = make(request_schema(21, version), timeout=datetime.timedelta(milliseconds=timeout_ms),
               topics=tuple(make(mod.DeleteRecordsTopic, name=t, partitions=tuple(ps))
                            for t, ps in topics.items()))
    host, port = bootstrap.rsplit(":", 1)
    resp = broker_request(host, int(port), req, "test", 15)
    return {(t.name, p.partition_index): (p.error_code, p.low_watermark)
            for t in resp.topics for p in t.partitions}


def segment_bases(log_dir, topic: str) -> list[int]:
    d = log_dir / f"{topic}-0"
    return sorted(int(f.name[:-4]) for f in d.iterdir() if f.name.endswith(".log"))


def test_confluent_delete_records_moves_the_start_everywhere(module_broker, topic_name):
    b = module_broker
    small_segments_topic(b.bootstrap, topic_name)
    assert segment_bases(b.log_dir, topic_name)[0] == 0
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    fs = admin.delete_records([TopicPartition(topic_name, 0, 20)], request_timeout=15)
    (tp, fut), = fs.items()
    assert fut.result(timeout=20).low_watermark == 20

    assert earliest(b.bootstrap, topic_name) == 20
    assert first_consumed_offset(b.bootstrap, topic_name) == 20
    # whole segments below the new start are gone (renamed .deleted at once)
    bases = segment_bases(b.log_dir, topic_name)
    assert 0 < bases[0] <= 20, bases
    with wire.KafkaSocket("127.0.0.1", b.port) as s:
        _, parts = wire.parse_fetch_v4(s.roundtrip(wire.fetch_v4(topic_name, 0, 5)))
        assert parts[0].error_code == OFFSET_OUT_OF_RANGE
        _, parts = wire.parse_fetch_v4(s.roundtrip(wire.fetch_v4(topic_name, 0, 20)))
        assert parts[0].error_code == 0 and parts[0].records
    # a smaller offset than the start changes nothing and answers the current start
    assert raw_delete(b.bootstrap, [(topic_name, 0, 10)]) == {(topic_name, 0): (0, 20)}


def test_kafka_python_delete_records_to_the_high_watermark(module_broker, topic_name):
    kadmin = pytest.importorskip("kafka.admin")
    from kafka.structs import TopicPartition as KTopicPartition

    if not hasattr(kadmin.KafkaAdminClient, "delete_records"):
        pytest.skip("this kafka-python has no delete_records")
    b = module_broker
    create_topic(b.bootstrap, topic_name, 1)
    produce(b.bootstrap, topic_name, 7)
    admin = kadmin.KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        out = admin.delete_records({KTopicPartition(topic_name, 0): -1}, timeout_ms=10000)
    finally:
        admin.close()
    assert out[KTopicPartition(topic_name, 0)]["low_watermark"] == 7
    assert earliest(b.bootstrap, topic_name) == 7
    produce(b.bootstrap, topic_name, 1)
    assert first_consumed_offset(b.bootstrap, topic_name) == 7


def test_bad_inputs(module_broker, topic_name):
    b = module_broker
    compacted = topic_name + "-compacted"
    create_topic(b.bootstrap, topic_name, 1)
    create_topic(b.bootstrap, compacted, 1, config={"cleanup.policy": "compact"})
    produce(b.bootstrap, topic_name, 5)
    for version in (0, 2):
        got = raw_delete(b.bootstrap, [
            (topic_name, 0, 6),  # past the high watermark
            (topic_name, 7, 1),  # no such partition
            ("no-such-topic", 0, 1),
            (compacted, 0, 0),  # cleanup.policy without delete
        ], version)
        assert got == {
            (topic_name, 0): (OFFSET_OUT_OF_RANGE, -1),
            (topic_name, 7): (UNKNOWN_TOPIC_OR_PARTITION, -1),
            ("no-such-topic", 0): (UNKNOWN_TOPIC_OR_PARTITION, -1),
            (compacted, 0): (POLICY_VIOLATION, -1),
        }
    # internal topics are refused (once __consumer_offsets exists)
    first_consumed_offset(b.bootstrap, topic_name)
    assert raw_delete(b.bootstrap, [("__consumer_offsets", 0, 0)]) == \
        {("__consumer_offsets", 0): (INVALID_TOPIC_EXCEPTION, -1)}
    assert raw_delete(b.bootstrap, [(topic_name, 0, 6)]) == \
        {(topic_name, 0): (OFFSET_OUT_OF_RANGE, -1)}
    assert raw_delete(b.bootstrap, [(topic_name, 0, -2)]) == \
        {(topic_name, 0): (OFFSET_OUT_OF_RANGE, -1)}
    assert earliest(b.bootstrap, topic_name) == 0  # nothing moved


def test_cli_round_trip_and_restart_keeps_the_start(start_broker, topic_name, tmp_path):
    b = start_broker()
    small_segments_topic(b.bootstrap, topic_name, 30)
    spec = tmp_path / "delete.json"
    spec.write_text(json.dumps({"partitions": [
        {"topic": topic_name, "partition": 0, "offset": 12},
        {"topic": topic_name, "partition": 3, "offset": 1}], "version": 1}))
    proc = subprocess.run(
        [sys.executable, "-m", "strom", "delete-records", "--bootstrap-server", b.bootstrap,
         "--offset-json-file", str(spec)], capture_output=True, text=True, timeout=60)
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["Executing records delete operation",
                         "Records delete operation completed:"], proc.stderr
    assert lines[2] == f"partition: {topic_name}-0\tlow_watermark: 12"
    # (librdkafka answers an unknown partition itself: "Local: Unknown partition")
    assert lines[3].startswith(f"partition: {topic_name}-3\terror: ")
    assert proc.returncode == 1

    spec.write_text(json.dumps({"partitions": [
        {"topic": topic_name, "partition": 0, "offset": 1},
        {"topic": topic_name, "partition": 0, "offset": 2}]}))
    proc = subprocess.run(
        [sys.executable, "-m", "strom", "delete-records", "--bootstrap-server", b.bootstrap,
         "--offset-json-file", str(spec)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "duplicate topic partitions" in proc.stderr

    assert b.stop() == 0
    b.start()
    assert earliest(b.bootstrap, topic_name) == 12
    assert first_consumed_offset(b.bootstrap, topic_name) == 12
