"""Several log.dirs, DescribeLogDirs (API 35) and `strom log-dirs`, against a real broker:
new partitions spread over the dirs (files on disk), a restart finds them all, each dir
has its own meta.properties and checkpoints, DescribeLogDirs reports both dirs with sizes
that grow with produced data (kafka-python's admin client and every version over the raw
protocol), the topic filter, and the tool's output. Bad input: a log dir that is a file,
and a partition present in two dirs, stop the start-up with a clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient

from strom.cli._common import broker_request
from strom.log.checkpoint import read_offsets
from strom.protocol.messages import make, request_module, request_schema
from strom.testing.broker import BrokerProcess, BrokerStartError

pytestmark = pytest.mark.timeout(90)

REPO_ROOT = Path(__file__).resolve().parents[2]


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)


def produce(bootstrap: str, topic: str, partition: int, count: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(count):
        p.produce(topic, value=b"v" * 100, key=str(i).encode(), partition=partition)
    assert p.flush(30) == 0


def describe(bootstrap: str, topic_partitions=None) -> dict[str, dict[tuple[str, int], dict]]:
    """kafka-python's describe_log_dirs: {log dir: {(topic, partition): partition info}}."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        [answer] = admin.describe_log_dirs(topic_partitions=topic_partitions)
    finally:
        admin.close()
    out = {}
    for d in answer["log_dirs"]:
        assert d["error_code"] == 0, d
        assert d["total_bytes"] >= d["usable_bytes"] > 0, d
        out[d["log_dir"]] = {(t["name"], p["partition_index"]): p
                             for t in d["topics"] for p in t["partitions"]}
    return out


def partition_dirs(d: Path, topic: str) -> set[int]:
    return {int(n.rsplit("-", 1)[1]) for n in os.listdir(d) if n.startswith(topic + "-")}


def log_dirs_tool(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "strom", "log-dirs", *args,
                           "--bootstrap-server", bootstrap],
                          capture_output=True, text=True, timeout=60, env=env)


def test_two_log_dirs_spread_restart_describe_and_tool(tmp_path, topic_names):
    a, b = tmp_path / "a", tmp_path / "b"
    broker = BrokerProcess(overrides={"log.dirs": f"{a},{b}"})
    try:
        broker.start()
        topic, other = topic_names.new("spread"), topic_names.new("other")
        create_topic(broker.bootstrap, topic, 5)
        create_topic(broker.bootstrap, other, 1)
        # fewest partitions first, ties to the first dir: a gets 0, 2, 4 and b 1, 3; the
        # next topic's only partition goes to b (2 there, 3 in a)
        assert partition_dirs(a, topic) == {0, 2, 4}
        assert partition_dirs(b, topic) == {1, 3}
        assert partition_dirs(b, other) == {0}

        before = describe(broker.bootstrap)
        assert set(before) == {str(a), str(b)}
        assert set(before[str(a)]) == {(topic, 0), (topic, 2), (topic, 4)}
        assert set(before[str(b)]) == {(topic, 1), (topic, 3), (other, 0)}
        assert all(p["partition_size"] == 0 and p["offset_lag"] == 0
                   and p["is_future_key"] is False
                   for d in before.values() for p in d.values())

        produce(broker.bootstrap, topic, 1, 20)
        after = describe(broker.bootstrap)
        size = after[str(b)][(topic, 1)]["partition_size"]
        on_disk = sum(f.stat().st_size for f in (b / f"{topic}-1").glob("*.log"))
        assert size == on_disk > 20 * 100
        assert after[str(a)][(topic, 0)]["partition_size"] == 0

        # the topic filter: only the partitions asked for; an unknown topic is left out
        # and each dir is still listed
        only = describe(broker.bootstrap, {topic: [1, 4], "no-such-topic": [0]})
        assert only == {str(a): {(topic, 4): after[str(a)][(topic, 4)]},
                        str(b): {(topic, 1): after[str(b)][(topic, 1)]}}
        assert describe(broker.bootstrap, {"no-such-topic": [0]}) == {str(a): {}, str(b): {}}

        # every version the broker serves answers, over the raw protocol
        for version in range(1, 5):
            mod = request_module(35, version)
            resp = broker_request("127.0.0.1", broker.port, make(
                request_schema(35, version), topics=(make(
                    mod.DescribableLogDirTopic, topic=topic, partitions=(1,)),)),
                "test", 30)
            dirs = {r.log_dir: [(t.name, p.partition_index, p.partition_size)
                                for t in r.topics for p in t.partitions] for r in resp.results}
            assert dirs == {str(a): [], str(b): [(topic, 1, size)]}, version

        # the tool: two status lines, then kafka-log-dirs' JSON (topics filtered)
        result = log_dirs_tool(broker.bootstrap, "--describe", "--topic-list", topic)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[:2] == ["Querying brokers for log directories information",
                             "Received log directory information from brokers 1"]
        assert len(lines) == 3
        assert json.loads(lines[2]) == {"version": 1, "brokers": [{"broker": 1, "logDirs": [
            {"logDir": str(d), "error": None, "partitions": [
                {"partition": f"{topic}-{p}", "size": size if p == 1 else 0, "offsetLag": 0,
                 "isFuture": False} for p in ps]}
            for d, ps in ((a, [0, 2, 4]), (b, [1, 3]))]}]}
        bad = log_dirs_tool(broker.bootstrap, "--describe", "--broker-list", "1,7")
        assert bad.returncode == 1
        assert bad.stderr.strip() == ("ERROR: The given brokers do not exist from "
                                      "--broker-list: 7. Current existent brokers: 1")

        # a restart finds every partition in the dir that holds it; each dir has its own
        # meta.properties and checkpoints
        broker.restart()
        assert describe(broker.bootstrap) == after
        for d in (a, b):
            for name in ("meta.properties", "recovery-point-offset-checkpoint",
                         "replication-offset-checkpoint", "log-start-offset-checkpoint"):
                assert (d / name).is_file(), (d, name)
        for d in (a, b):
            assert set(read_offsets(str(d / "recovery-point-offset-checkpoint"))) == \
                set(after[str(d)])
    finally:
        broker.close()


def test_log_dir_that_is_a_file_is_a_clear_startup_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "not-a-dir").write_text("x")
    broker = BrokerProcess(overrides={"log.dirs": f"{tmp_path / 'a'},{tmp_path / 'not-a-dir'}"})
    try:
        with pytest.raises(BrokerStartError):
            broker.start()
        assert broker.returncode == 1
        log = broker.log_text()
        assert (f"Cannot start: Failed to create or validate data directory "
                f"{tmp_path / 'not-a-dir'}: it is not a directory") in log, log
        assert "Traceback" not in log
    finally:
        broker.close()


def test_partition_in_two_log_dirs_is_a_clear_startup_error(tmp_path, topic_name):
    a, b = tmp_path / "a", tmp_path / "b"
    broker = BrokerProcess(overrides={"log.dirs": f"{a},{b}"})
    try:
        broker.start()
        create_topic(broker.bootstrap, topic_name, 1)
        assert partition_dirs(a, topic_name) == {0}
        broker.stop()
        (b / f"{topic_name}-0").mkdir()
        with pytest.raises(BrokerStartError):
            broker.start()
        log = broker.log_text(current_run_only=True)
        assert f"Duplicate log directories for {topic_name}-0 are found in both" in log, log
        assert "Traceback" not in log
    finally:
        broker.close()
