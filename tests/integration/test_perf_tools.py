"""`strom producer-perf-test` and `strom consumer-perf-test` run as a user runs them, against
an embedded broker; their output is parsed for the fields Kafka's tools print."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time

import pytest

from strom import EmbeddedBroker
from strom.cli.consumer_perf_test import date_formatter
from strom.cli.progress import Progress

NUM = 3000
SIZE = 100

PRODUCER_TOTAL = re.compile(
    r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th\.$")
CONSUMER_HEADER = ("start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, "
                   "nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec")
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}"


def strom(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "strom", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def perf_broker():
    with EmbeddedBroker() as broker:
        yield broker


def test_produce_then_consume(perf_broker, tmp_path):
    topic = perf_broker.create_topic(partitions=2)
    config = tmp_path / "producer.properties"
    config.write_text(f"bootstrap.servers={perf_broker.bootstrap}\n"
                      "key.serializer=org.apache.kafka.common.serialization.ByteArraySerializer\n")
    produced = strom("producer-perf-test", "--topic", topic, "--num-records", str(NUM),
                     "--record-size", str(SIZE), "--throughput", "-1",
                     "--producer.config", str(config), "--producer-props", "acks=all",
                     "--print-metrics")
    assert produced.returncode == 0, produced.stderr
    lines = produced.stdout.splitlines()
    total = next(m for line in lines if (m := PRODUCER_TOTAL.match(line)))
    assert int(total.group(1)) == NUM
    sent, avg, worst, p50, p999 = (float(total.group(i)) for i in (1, 4, 5, 6, 9))
    assert 0 <= p50 <= p999 <= worst and avg <= worst
    assert float(total.group(2)) > 0 and float(total.group(3)) > 0
    metrics = dict(re.findall(r"^producer-metrics:([\w-]+):\{client-id=perf-producer-client\}"
                              r"\s+: ([\d.]+)$", produced.stdout, re.M))
    assert float(metrics["record-send-total"]) == NUM
    assert float(metrics["record-error-total"]) == 0

    consumed = strom("consumer-perf-test", "--bootstrap-server", perf_broker.bootstrap,
                     "--topic", topic, "--messages", str(NUM), "--timeout", "30000")
    assert consumed.returncode == 0, consumed.stderr
    header, values = consumed.stdout.splitlines()[:2]
    assert header == CONSUMER_HEADER
    fields = values.split(", ")
    assert len(fields) == 10
    assert re.fullmatch(TIME, fields[0]) and re.fullmatch(TIME, fields[1])
    assert fields[2] == f"{NUM * SIZE / 1024 / 1024:.4f}"  # data.consumed.in.MB
    assert int(fields[4]) == NUM  # data.consumed.in.nMsg
    assert float(fields[5]) > 0 and int(fields[6]) >= 0 and int(fields[7]) >= 0


def test_consumer_detailed_stats_and_timeout_warning(perf_broker):
    topic = perf_broker.create_topic()
    produced = strom("producer-perf-test", "--topic", topic, "--num-records", "200",
                     "--payload-monotonic", "--throughput", "-1",
                     "--bootstrap-server", perf_broker.bootstrap)
    assert produced.returncode == 0, produced.stderr
    # asks for more than there is: Kafka's warning after --timeout, and the lines so far
    consumed = strom("consumer-perf-test", "--bootstrap-server", perf_broker.bootstrap,
                     "--topic", topic, "--messages", "1000", "--timeout", "1500",
                     "--show-detailed-stats", "--reporting-interval", "1")
    assert consumed.returncode == 0, consumed.stderr
    lines = consumed.stdout.splitlines()
    assert lines[0].startswith("time, threadId, data.consumed.in.MB")
    assert any(line.startswith("WARNING: Exiting before consuming the expected number of "
                               "messages: timeout (1500 ms) exceeded.") for line in lines)
    detailed = [line.split(", ") for line in lines[1:] if re.match(TIME, line)]
    assert detailed and all(len(f) == 10 and f[1] == "0" for f in detailed)
    assert int(detailed[-1][4]) == 200  # the running count reaches what was produced


def test_unreachable_bootstrap_is_an_error():
    began = time.monotonic()
    produced = strom("producer-perf-test", "--topic", "t", "--num-records", "10",
                     "--record-size", "10", "--throughput", "-1", "--producer-props",
                     "bootstrap.servers=127.0.0.1:1", "max.block.ms=1500")
    consumed = strom("consumer-perf-test", "--bootstrap-server", "127.0.0.1:1", "--topic", "t",
                     "--messages", "10", "--timeout", "1500")
    assert time.monotonic() - began < 60
    for result, tool in ((produced, "producer"), (consumed, "consumer")):
        assert result.returncode == 1
        assert f"strom {tool}-perf-test: topic 't' not available within 1500 ms" in result.stderr


def test_bad_arguments():
    result = strom("producer-perf-test", "--topic", "t", "--num-records", "0",
                   "--record-size", "1", "--throughput", "-1", "--producer-props", "a=b")
    assert result.returncode == 1 and "--num-records should be greater than zero" in result.stderr
    result = strom("producer-perf-test", "--topic", "t", "--num-records", "5",
                   "--record-size", "1", "--throughput", "-1")
    assert result.returncode == 1 and "--producer-props or --producer.config" in result.stderr


def test_progress_bar_and_plain_lines():
    out = io.StringIO()
    with Progress("Working", total=4, unit="items", stream=out, interactive=True) as p:
        for _ in range(4):
            p.advance()
    assert p.done == 4  # the bar was drawn (and removed: transient) on the stream
    plain = io.StringIO()
    with Progress("Working", total=4, unit="items", stream=plain, plain_every=1e-9) as p:
        p.advance(2)
    assert plain.getvalue() == "Working: 2/4 items (50%)\n"


def test_date_format():
    fmt = date_formatter("yyyy-MM-dd HH:mm:ss:SSS")
    assert re.fullmatch(TIME, fmt(1_700_000_000.123))
    assert fmt(1_700_000_000.123).endswith(":123")
