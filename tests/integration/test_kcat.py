"""Debian's kcat (librdkafka 2.0.2) against a real strom broker.

librdkafka 2.0.2 cannot skip unknown tagged fields in ApiVersions v3 responses, so this is
the client that proves the broker sends tagged fields only when they differ from defaults.
kcat runs with its defaults except `-b` (and a codec or idempotence where that is the point);
it cannot create topics itself, so multi-partition topics are made with confluent-kafka and
the auto-create path is tested through kcat's own producer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from confluent_kafka import Producer

from strom.testing.kafka import create_topic, wait_for_topic

KCAT = shutil.which("kcat") or "/usr/bin/kcat"

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not shutil.which("kcat"), reason="kcat is not installed (apt-get install kcat)"),
]

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def kcat(*args: str, input: bytes | None = None, timeout: float = 30.0,
         check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([KCAT, *args], input=input, capture_output=True, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, (
            f"kcat {' '.join(args)} exited {proc.returncode}\nstderr:\n"
            f"{proc.stderr.decode(errors='replace')[-4000:]}")
    assert b"Read underflow" not in proc.stderr, proc.stderr.decode(errors="replace")[-4000:]
    return proc


def consume_json(bootstrap: str, topic: str, *extra: str, count: int | None = None) -> list[dict]:
    args = ["-C", "-b", bootstrap, "-t", topic, "-e", "-J", *extra]
    if count is not None:
        args += ["-c", str(count)]
    out = kcat(*args).stdout.decode()
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def headers_of(msg: dict) -> list[tuple[str, str | None]]:
    h = msg.get("headers") or []
    return list(zip(h[0::2], h[1::2], strict=True))


def test_metadata_list(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 3)
    md = json.loads(kcat("-L", "-b", module_broker.bootstrap, "-J").stdout)
    assert md["brokers"] == [{"id": 1, "name": module_broker.bootstrap}]
    assert md["controllerid"] == 1
    [t] = [t for t in md["topics"] if t["topic"] == topic_name]
    assert "error" not in t
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2]
    for p in t["partitions"]:
        assert p["leader"] == 1 and p["replicas"] == [{"id": 1}] and p["isrs"] == [{"id": 1}]
    # the plain text form too
    text = kcat("-L", "-b", module_broker.bootstrap, "-t", topic_name).stdout.decode()
    assert f'topic "{topic_name}" with 3 partitions' in text


@pytest.mark.parametrize("codec", CODECS)
def test_produce_and_consume_keyed_records_with_headers(module_broker, topic_name, codec):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 2)
    n = 30
    lines = b"".join(b"key-%d:value-%s-%d\n" % (i % 4, codec.encode(), i) for i in range(n))
    args = ["-P", "-b", bs, "-t", topic_name, "-p", "1", "-K", ":",
            "-H", "source=kcat", "-H", f"codec={codec}", "-H", "dup=a", "-H", "dup=b"]
    if codec != "none":
        args += ["-X", f"compression.codec={codec}"]
    kcat(*args, input=lines)

    msgs = consume_json(bs, topic_name, "-p", "1", "-o", "beginning")
    assert [m["offset"] for m in msgs] == list(range(n))
    assert all(m["partition"] == 1 and m["topic"] == topic_name for m in msgs)
    assert [(m["key"], m["payload"]) for m in msgs] == [
        (f"key-{i % 4}", f"value-{codec}-{i}") for i in range(n)]
    for m in msgs:
        assert headers_of(m) == [("source", "kcat"), ("codec", codec), ("dup", "a"),
                                 ("dup", "b")]
        assert m["tstype"] == "create" and m["ts"] > 0
    # partition 0 stayed empty
    assert consume_json(bs, topic_name, "-p", "0", "-o", "beginning") == []


def test_consume_from_offset_and_relative_end(module_broker, topic_name):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1)
    kcat("-P", "-b", bs, "-t", topic_name, "-p", "0",
         input=b"".join(b"m%d\n" % i for i in range(20)))
    msgs = consume_json(bs, topic_name, "-p", "0", "-o", "13")
    assert [(m["offset"], m["payload"]) for m in msgs] == [(i, f"m{i}") for i in range(13, 20)]
    msgs = consume_json(bs, topic_name, "-p", "0", "-o", "-3")  # 3 from the end
    assert [m["offset"] for m in msgs] == [17, 18, 19]


def test_timestamps_query_and_consume_from_timestamp(module_broker, topic_name):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1)
    base = int(time.time() * 1000) - 3_600_000
    producer = Producer({"bootstrap.servers": bs})
    for i in range(10):
        producer.produce(topic_name, value=f"t{i}".encode(), key=b"k", partition=0,
                         timestamp=base + i * 1000)
    assert producer.flush(15) == 0

    q = json.loads(kcat("-Q", "-b", bs, "-t", f"{topic_name}:0:{base + 4500}", "-J").stdout)
    assert q[topic_name]["0"]["offset"] == 5, q
    assert "error" not in q[topic_name]["0"], q

    msgs = consume_json(bs, topic_name, "-p", "0", "-o", f"s@{base + 7000}")
    assert [(m["offset"], m["payload"], m["ts"]) for m in msgs] == [
        (i, f"t{i}", base + i * 1000) for i in (7, 8, 9)]
    # and stop at a timestamp (exclusive)
    msgs = consume_json(bs, topic_name, "-p", "0", "-o", f"s@{base + 2000}",
                        "-o", f"e@{base + 4000}")
    assert [m["offset"] for m in msgs] == [2, 3]


def test_idempotent_producer(module_broker, topic_name):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1)
    n = 200
    kcat("-P", "-b", bs, "-t", topic_name, "-p", "0", "-X", "enable.idempotence=true",
         input=b"".join(b"idem-%d\n" % i for i in range(n)))
    msgs = consume_json(bs, topic_name, "-p", "0", "-o", "beginning")
    assert [(m["offset"], m["payload"]) for m in msgs] == [(i, f"idem-{i}") for i in range(n)]


def test_producer_auto_creates_topic(module_broker, topic_name):
    bs = module_broker.bootstrap
    kcat("-P", "-b", bs, "-t", topic_name, "-K", ":", input=b"a:1\nb:2\nc:3\n")
    wait_for_topic(bs, topic_name, 1)  # num.partitions defaults to 1
    msgs = consume_json(bs, topic_name, "-o", "beginning")
    assert [(m["partition"], m["offset"], m["key"], m["payload"]) for m in msgs] == [
        (0, 0, "a", "1"), (0, 1, "b", "2"), (0, 2, "c", "3")]


def test_consumes_what_other_clients_produced(module_broker, topic_name):
    """Null keys, null values and binary bytes written by librdkafka 2.x (with headers and
    zstd) read back by librdkafka 2.0.2."""
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1)
    producer = Producer({"bootstrap.servers": bs, "compression.type": "zstd"})
    producer.produce(topic_name, value=b"v0", key=None, partition=0)
    producer.produce(topic_name, value=None, key=b"tomb", partition=0)
    producer.produce(topic_name, value=b"v2", key=b"k2", partition=0,
                     headers=[("h", b"x"), ("n", None)])
    assert producer.flush(15) == 0
    msgs = consume_json(bs, topic_name, "-p", "0", "-o", "beginning")
    assert [(m["offset"], m["key"], m["payload"]) for m in msgs] == [
        (0, None, "v0"), (1, "tomb", None), (2, "k2", "v2")]
    assert headers_of(msgs[2]) == [("h", "x"), ("n", None)]
