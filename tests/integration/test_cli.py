"""The client tools (`strom topics`, `produce`, `consume`, `get-offsets`) run as a user runs
them: as subprocesses against a real broker, checking their output line by line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 90  # seconds for one tool invocation


def strom(broker, *args: str, stdin: str | bytes | None = None) -> subprocess.CompletedProcess:
    """Run `python -m strom <args> --bootstrap-server <broker>`; stdout/stderr as text."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [sys.executable, "-m", "strom", *args, "--bootstrap-server", broker.bootstrap],
        input=data if data is not None else b"",
        capture_output=True,
        timeout=RUN_TIMEOUT,
        cwd=REPO_ROOT,
        env=env,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode,
        proc.stdout.decode("utf-8", errors="replace"),
        proc.stderr.decode("utf-8", errors="replace"),
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}\nstdout:\n{result.stdout}\n"
        f"stderr:\n{result.stderr}"
    )
    return result


def create(broker, topic: str, *extra: str) -> None:
    """Create a topic; one partition unless `extra` says otherwise (broker defaults vary)."""
    if "--partitions" not in extra and "--replica-assignment" not in extra:
        extra = ("--partitions", "1", *extra)
    out = ok(strom(broker, "topics", "--create", "--topic", topic, *extra)).stdout
    assert out.splitlines() == [f"Created topic {topic}."]


def consume_lines(broker, topic: str, count: int, *extra: str) -> list[str]:
    result = ok(strom(broker, "consume", "--topic", topic, "--max-messages", str(count),
                      "--timeout-ms", "20000", *extra))
    assert f"Processed a total of {count} messages" in result.stderr
    return result.stdout.splitlines()


def describe(broker, topic: str) -> tuple[str, list[str]]:
    lines = ok(strom(broker, "topics", "--describe", "--topic", topic)).stdout.splitlines()
    assert lines, "describe printed nothing"
    return lines[0], lines[1:]


def partition_line(topic: str, partition: int, node: int) -> str:
    return (f"\tTopic: {topic}\tPartition: {partition}\tLeader: {node}\tReplicas: {node}"
            f"\tIsr: {node}")


# -- topics ----------------------------------------------------------------------------------


def test_topics_create_list_describe_delete(module_broker, topic_name):
    node = module_broker.node_id
    create(module_broker, topic_name, "--partitions", "3", "--replication-factor", "1",
           "--config", "retention.ms=123456", "--config", "cleanup.policy=compact")

    listed = ok(strom(module_broker, "topics", "--list")).stdout.splitlines()
    assert topic_name in listed

    head, partitions = describe(module_broker, topic_name)
    fields = head.split("\t")
    assert fields[0] == f"Topic: {topic_name}"
    assert re.fullmatch(r"TopicId: [A-Za-z0-9+/_-]{22}", fields[1])
    assert fields[2:4] == ["PartitionCount: 3", "ReplicationFactor: 1"]
    assert fields[4].startswith("Configs: ")
    configs = set(fields[4][len("Configs: "):].split(","))
    assert {"retention.ms=123456", "cleanup.policy=compact"} <= configs
    assert partitions == [partition_line(topic_name, p, node) for p in range(3)]

    ok(strom(module_broker, "topics", "--delete", "--topic", topic_name))
    deadline = time.monotonic() + 30
    while topic_name in ok(strom(module_broker, "topics", "--list")).stdout.splitlines():
        assert time.monotonic() < deadline, f"{topic_name} still listed after --delete"
        time.sleep(0.2)


def test_topics_create_existing(module_broker, topic_name):
    create(module_broker, topic_name)
    again = strom(module_broker, "topics", "--create", "--topic", topic_name)
    assert again.returncode == 1
    assert "Error while executing topic command" in again.stderr
    assert "exists" in again.stderr
    quiet = ok(strom(module_broker, "topics", "--create", "--topic", topic_name,
                     "--if-not-exists"))
    assert quiet.stdout == ""


def test_topics_missing_topic(module_broker, topic_name):
    for action in ("--describe", "--delete"):
        result = strom(module_broker, "topics", action, "--topic", topic_name)
        assert result.returncode == 1
        assert f"Topic '{topic_name}' does not exist as expected" in result.stderr
        quiet = ok(strom(module_broker, "topics", action, "--topic", topic_name, "--if-exists"))
        assert quiet.stdout == ""


def test_topics_describe_regex_and_list_filter(module_broker, topic_names):
    base = topic_names.new()
    names = [f"{base}.a", f"{base}.b"]
    for name in names:
        create(module_broker, name)
    other = topic_names.new("other")
    create(module_broker, other)
    pattern = re.escape(base) + r"\..*"
    listed = ok(strom(module_broker, "topics", "--list", "--topic", pattern)).stdout
    assert listed.splitlines() == names
    heads = [line for line in ok(strom(module_broker, "topics", "--describe", "--topic",
                                       pattern)).stdout.splitlines()
             if line.startswith("Topic: ")]
    assert [h.split("\t")[0] for h in heads] == [f"Topic: {n}" for n in names]


def test_topics_alter_partitions_and_config(module_broker, topic_name):
    create(module_broker, topic_name, "--partitions", "1")
    ok(strom(module_broker, "topics", "--alter", "--topic", topic_name, "--partitions", "4"))
    ok(strom(module_broker, "topics", "--alter", "--topic", topic_name,
             "--config", "retention.ms=7777"))
    head, partitions = describe(module_broker, topic_name)
    assert "\tPartitionCount: 4\t" in head
    assert "retention.ms=7777" in head.split("Configs: ", 1)[1].split(",")
    assert [p.split("\t")[2] for p in partitions] == [f"Partition: {i}" for i in range(4)]

    shrink = strom(module_broker, "topics", "--alter", "--topic", topic_name,
                   "--partitions", "2")
    assert shrink.returncode == 1
    assert "Error while executing topic command" in shrink.stderr


def test_topics_replica_assignment(module_broker, topic_name):
    node = module_broker.node_id
    create(module_broker, topic_name, "--replica-assignment", f"{node},{node}")
    head, partitions = describe(module_broker, topic_name)
    assert "\tPartitionCount: 2\tReplicationFactor: 1\t" in head
    assert partitions == [partition_line(topic_name, p, node) for p in range(2)]

    bad = strom(module_broker, "topics", "--create", "--topic", topic_name + "-x",
                "--replica-assignment", f"{node}:{node}")
    assert bad.returncode == 1
    assert "duplicate" in bad.stderr


def test_topics_under_replicated_on_single_broker(module_broker, topic_name):
    create(module_broker, topic_name, "--partitions", "2")
    result = ok(strom(module_broker, "topics", "--describe", "--topic", topic_name,
                      "--under-replicated-partitions"))
    assert result.stdout == ""


def test_topics_bad_arguments(module_broker):
    result = strom(module_broker, "topics", "--create")
    assert result.returncode == 1
    assert "--topic is required" in result.stderr


# -- produce / consume -----------------------------------------------------------------------


def test_produce_and_consume_with_keys(module_broker, topic_name):
    create(module_broker, topic_name)
    ok(strom(module_broker, "produce", "--topic", topic_name, "--property", "parse.key=true",
             "--property", "key.separator=:", stdin="k1:v1\nk2:v:2\nk3:\n"))
    lines = consume_lines(module_broker, topic_name, 3, "--from-beginning",
                          "--property", "print.key=true")
    assert lines == ["k1\tv1", "k2\tv:2", "k3\t"]


def test_produce_plain_lines_keep_bytes(module_broker, topic_name):
    create(module_broker, topic_name)
    text = "plain\n\nwindows\r\ntab\there\nünïcödé\n"
    ok(strom(module_broker, "produce", "--topic", topic_name, stdin=text))
    lines = consume_lines(module_broker, topic_name, 5, "--from-beginning",
                          "--property", "print.key=true")
    assert lines == ["null\tplain", "null\t", "null\twindows", "null\ttab\there",
                     "null\tünïcödé"]


def test_consume_full_format(module_broker, topic_name):
    create(module_broker, topic_name)
    ok(strom(module_broker, "produce", "--topic", topic_name, "--property", "parse.key=true",
             "--property", "parse.headers=true", "--property", "null.marker=NULL",
             stdin="h1:a,h2:NULL\tkey\tvalue\nNULL\tNULL\tNULL\n"))
    lines = consume_lines(
        module_broker, topic_name, 2, "--from-beginning",
        *[arg for p in ("print.timestamp", "print.partition", "print.offset", "print.headers",
                        "print.key") for arg in ("--property", f"{p}=true")],
        "--property", "key.separator=|", "--property", "null.literal=<nil>")
    assert re.fullmatch(r"CreateTime:\d{13}\|Partition:0\|Offset:0\|h1:a,h2:<nil>\|key\|value",
                        lines[0]), lines[0]
    assert re.fullmatch(r"CreateTime:\d{13}\|Partition:0\|Offset:1\|NO_HEADERS\|<nil>\|<nil>",
                        lines[1]), lines[1]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_produce_compressed(module_broker, topic_name, codec):
    create(module_broker, topic_name)
    records = [f"{codec}-{i}-" + "x" * (i * 50) for i in range(20)]
    ok(strom(module_broker, "produce", "--topic", topic_name, "--compression-codec", codec,
             "--request-required-acks", "1", stdin="".join(r + "\n" for r in records)))
    assert consume_lines(module_broker, topic_name, 20, "--from-beginning") == records


def test_consume_partition_and_offset(module_broker, topic_name):
    create(module_broker, topic_name, "--partitions", "2")
    ok(strom(module_broker, "produce", "--topic", topic_name, "--partition", "1",
             stdin="p1-0\np1-1\np1-2\n"))
    ok(strom(module_broker, "produce", "--topic", topic_name, "--partition", "0",
             stdin="p0-0\n"))
    assert consume_lines(module_broker, topic_name, 2, "--partition", "1",
                         "--offset", "1") == ["p1-1", "p1-2"]
    assert consume_lines(module_broker, topic_name, 1, "--partition", "0",
                         "--offset", "earliest") == ["p0-0"]
    everything = consume_lines(module_broker, topic_name, 4, "--from-beginning",
                               "--property", "print.partition=true")
    assert sorted(everything) == ["Partition:0\tp0-0", "Partition:1\tp1-0",
                                  "Partition:1\tp1-1", "Partition:1\tp1-2"]


def test_consume_timeout_on_empty_topic(module_broker, topic_name):
    create(module_broker, topic_name)
    result = ok(strom(module_broker, "consume", "--topic", topic_name, "--from-beginning",
                      "--timeout-ms", "1500"))
    assert result.stdout == ""
    assert "Processed a total of 0 messages" in result.stderr


def test_consume_argument_errors(module_broker, topic_name):
    result = strom(module_broker, "consume", "--topic", topic_name, "--offset", "3")
    assert result.returncode == 1
    assert "The partition is required when offset is specified." in result.stderr
    missing = strom(module_broker, "consume", "--topic", topic_name, "--timeout-ms", "1000")
    assert missing.returncode == 1
    assert f"Topic '{topic_name}' does not exist" in missing.stderr


def test_produce_missing_key_separator(module_broker, topic_name):
    create(module_broker, topic_name)
    result = strom(module_broker, "produce", "--topic", topic_name, "--property",
                   "parse.key=true", stdin="a\tb\nno separator\n")
    assert result.returncode == 1
    assert "No key separator found on line number 2: 'no separator'" in result.stderr
    # The line before the bad one was still delivered.
    assert consume_lines(module_broker, topic_name, 1, "--from-beginning",
                         "--property", "print.key=true") == ["a\tb"]


def test_produce_delivery_failure_exits_nonzero(module_broker, topic_name):
    create(module_broker, topic_name)
    result = strom(module_broker, "produce", "--topic", topic_name, "--partition", "7",
                   "--producer-property", "message.timeout.ms=10000", stdin="lost\n")
    assert result.returncode == 1
    assert "Error when sending message to topic" in result.stderr


# -- get-offsets -----------------------------------------------------------------------------


def test_get_offsets_latest_earliest_partitions(module_broker, topic_name):
    create(module_broker, topic_name, "--partitions", "2")
    ok(strom(module_broker, "produce", "--topic", topic_name, "--partition", "0",
             stdin="a\nb\nc\n"))
    ok(strom(module_broker, "produce", "--topic", topic_name, "--partition", "1", stdin="d\n"))

    def offsets(*extra: str) -> list[str]:
        return ok(strom(module_broker, "get-offsets", "--topic", topic_name,
                        *extra)).stdout.splitlines()

    assert offsets() == [f"{topic_name}:0:3", f"{topic_name}:1:1"]
    assert offsets("--time", "-1") == [f"{topic_name}:0:3", f"{topic_name}:1:1"]
    assert offsets("--time", "earliest") == [f"{topic_name}:0:0", f"{topic_name}:1:0"]
    assert offsets("--partitions", "1") == [f"{topic_name}:1:1"]
    by_pattern = ok(strom(module_broker, "get-offsets", "--topic-partitions",
                          f"{re.escape(topic_name)}:0")).stdout.splitlines()
    assert by_pattern == [f"{topic_name}:0:3"]


def test_get_offsets_by_timestamp(module_broker, topic_name):
    from confluent_kafka import Producer

    create(module_broker, topic_name)
    producer = Producer({"bootstrap.servers": module_broker.bootstrap})
    for value, ts in ((b"a", 1000), (b"b", 3000), (b"c", 2000)):
        producer.produce(topic_name, value=value, partition=0, timestamp=ts)
    assert producer.flush(30) == 0

    def at(time_arg: str) -> list[str]:
        return ok(strom(module_broker, "get-offsets", "--topic", topic_name,
                        "--time", time_arg)).stdout.splitlines()

    assert at("999") == [f"{topic_name}:0:0"]
    assert at("1500") == [f"{topic_name}:0:1"]
    assert at("2500") == [f"{topic_name}:0:1"]
    assert at("3001") == []
    assert at("-3") == [f"{topic_name}:0:1"]
    assert at("max-timestamp") == [f"{topic_name}:0:1"]


def test_get_offsets_errors(module_broker, topic_name):
    result = strom(module_broker, "get-offsets", "--topic", topic_name)
    assert result.returncode == 1
    assert "Could not match any topic-partitions" in result.stderr
    bad = strom(module_broker, "get-offsets", "--time", "yesterday")
    assert bad.returncode == 1
    assert "Malformed time argument yesterday" in bad.stderr
