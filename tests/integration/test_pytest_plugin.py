"""The pytest plugin (strom.testing.pytest_plugin) run by pytest itself through `pytester`:
a user's test file using every fixture passes, a failing test keeps its data with
--strom-keep-data, and pytest-xdist gives each worker its own broker.

The plugin is loaded with `-p` so that these tests do not depend on the installed
entry point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PLUGIN = ("-p", "strom.testing.pytest_plugin")

USER_TESTS = '''
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient


def partitions(bootstrap, topic):
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(md.topics[topic].partitions)


def test_round_trip(kafka_bootstrap, kafka_topic):
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(kafka_topic, b"hello")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "g",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([kafka_topic])
    try:
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                assert msg.value() == b"hello"
                return
    finally:
        consumer.close()
    raise AssertionError("nothing consumed")


def test_fresh_topics_differ(kafka_broker, kafka_topic):
    assert kafka_broker.bootstrap
    assert partitions(kafka_broker.bootstrap, kafka_topic) == 1


@pytest.mark.strom(partitions=3, topic_config={"cleanup.policy": "compact"})
def test_topic_marker(kafka_bootstrap, kafka_topic):
    assert partitions(kafka_bootstrap, kafka_topic) == 3


@pytest.mark.strom(config={"num.partitions": 5})
def test_broker_of_its_own(kafka_broker, kafka_bootstrap):
    assert kafka_bootstrap != kafka_broker.bootstrap
    topic = f"auto-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, b"x")
    assert producer.flush(30) == 0
    assert partitions(kafka_bootstrap, topic) == 5


def test_factory(strom_broker_factory):
    broker = strom_broker_factory(config={"auto.create.topics.enable": False})
    assert broker.running
'''


def _outcomes(result) -> dict[str, int]:
    return result.parseoutcomes()


def test_every_fixture_in_a_user_suite(pytester: pytest.Pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(*PLUGIN, "--strom-config", "num.partitions=2",
                                           "-q", timeout=120)
    result.assert_outcomes(passed=5)


def test_failed_test_keeps_its_data(pytester: pytest.Pytester):
    pytester.makepyfile(test_fail='''
from confluent_kafka import Producer

def test_fails(kafka_bootstrap, kafka_topic):
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(kafka_topic, b"evidence")
    assert producer.flush(30) == 0
    assert False, "on purpose"

def test_passes(kafka_topic):
    pass
''')
    result = pytester.runpytest_subprocess(*PLUGIN, "--strom-keep-data", "-q", timeout=120)
    result.assert_outcomes(passed=1, failed=1)
    text = result.stdout.str()
    assert "log dirs kept for failed tests" in text
    kept = re.search(r"log dir kept: (\S+)", text)
    assert kept, text
    log_dir = Path(kept.group(1))
    try:
        dirs = [d.name for d in log_dir.iterdir() if d.name.startswith("test_fails-")]
        assert len(dirs) == 1 and (log_dir / dirs[0] / "00000000000000000000.log").stat().st_size
    finally:
        import shutil

        shutil.rmtree(log_dir.parent, ignore_errors=True)

    # without the option nothing is kept
    result = pytester.runpytest_subprocess(*PLUGIN, "-q", timeout=120)
    result.assert_outcomes(passed=1, failed=1)
    assert "log dir kept" not in result.stdout.str()


def test_xdist_gives_each_worker_its_own_broker(pytester: pytest.Pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_workers='''
import os

import pytest


@pytest.mark.parametrize("i", range(6))
def test_record(i, kafka_broker, kafka_topic, tmp_path_factory):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    out = tmp_path_factory.getbasetemp().parent.parent / "seen"
    with open(out, "a") as f:
        f.write(f"{worker} {kafka_broker.bootstrap}\\n")
''')
    result = pytester.runpytest_subprocess(*PLUGIN, "-n", "2", "-p", "xdist", "-q",
                                           timeout=120)
    result.assert_outcomes(passed=6)
    seen = {}
    for path in pytester.path.parent.rglob("seen"):
        for line in path.read_text().splitlines():
            worker, bootstrap = line.split()
            seen.setdefault(worker, set()).add(bootstrap)
    assert set(seen) == {"gw0", "gw1"}, seen
    assert all(len(b) == 1 for b in seen.values()), seen  # one broker per worker
    assert seen["gw0"] != seen["gw1"]
