"""Dynamic broker configs (/config/brokers/<id> and <default>) through confluent-kafka's
AdminClient, kafka-python's admin and raw requests (confluent-kafka's ConfigResource refuses
the cluster default's empty name), and `strom configs` round trips (topics, brokers, the
broker default, broker loggers)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

from strom.cli._common import broker_request
from strom.protocol.messages import make, request_module, request_schema
from strom.testing.kafka import create_topic

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)

INVALID_REQUEST, INVALID_CONFIG = 42, 40
SET, DELETE = 0, 1


def strom(broker, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH"))
                                        if p)
    return subprocess.run([sys.executable, "-m", "strom", *args, "--bootstrap-server",
                           broker.bootstrap], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT, env=env)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result


def admin_for(broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def describe(admin: AdminClient, kind: ResourceType, name: str) -> dict:
    res = ConfigResource(kind, name)
    return admin.describe_configs([res], request_timeout=15)[res].result(timeout=15)


def incremental(admin: AdminClient, name: str, ops: dict[str, str | None],
                validate_only: bool = False):
    """IncrementalAlterConfigs on broker `name`: SET for a value, DELETE for None; the
    KafkaError, or None on success."""
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET if v is not None
                           else AlterConfigOpType.DELETE) for k, v in ops.items()]
    res = ConfigResource(ResourceType.BROKER, name, incremental_configs=entries)
    try:
        admin.incremental_alter_configs([res], request_timeout=15,
                                        validate_only=validate_only)[res].result(timeout=15)
    except KafkaException as e:
        return e.args[0]
    return None


def alter_default(broker, ops: dict[str, str | None], name: str = "") -> tuple[int, str | None]:
    """IncrementalAlterConfigs v0 sent to `broker` on the broker resource `name` (the
    cluster default: "")."""
    mod = request_module(44, 0)
    configs = tuple(make(mod.AlterableConfig, name=k, config_operation=SET if v is not None
                         else DELETE, value=v) for k, v in ops.items())
    response = broker_request("127.0.0.1", broker.port, make(request_schema(44, 0), validate_only=False, resources=(
        make(mod.AlterConfigsResource, resource_type=4, resource_name=name, configs=configs),)),
        "test", 15)
    result = response.responses[0]
    return int(result.error_code), result.error_message


def segment_files(broker, topic: str) -> int:
    return len(list((broker.log_dir / f"{topic}-0").glob("*.log")))


def test_dynamic_broker_configs(start_broker, topic_name):
    b = start_broker()
    admin = admin_for(b)
    plain, overridden = topic_name, topic_name + "-o"
    create_topic(b.bootstrap, plain, 1)
    create_topic(b.bootstrap, overridden, 1, config={"retention.ms": "1000"})

    # the cluster default: topics without an override follow it at once
    assert alter_default(b, {"log.retention.ms": "3600000", "log.segment.bytes": "1048576"}) \
        == (0, None)
    entries = describe(admin, ResourceType.BROKER, "1")
    assert entries["log.retention.ms"].value == "3600000"
    assert entries["log.retention.ms"].source == \
        ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
    assert not entries["log.retention.ms"].is_read_only
    assert entries["log.dirs"].is_read_only
    topic = describe(admin, ResourceType.TOPIC, plain)
    assert topic["retention.ms"].value == "3600000"
    assert topic["retention.ms"].source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
    assert topic["segment.bytes"].value == "1048576"
    assert describe(admin, ResourceType.TOPIC, overridden)["retention.ms"].value == "1000"

    # the new segment size applies to the running partition: 3 MiB roll into >= 3 segments
    producer = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
    for _ in range(48):
        producer.produce(plain, value=b"x" * 65536)
    assert producer.flush(30) == 0
    assert segment_files(b, plain) >= 3

    # the broker's own value beats the default; both are synonyms, in Kafka's order
    assert incremental(admin, "1", {"log.retention.ms": "1800000"}) is None
    entry = describe(admin, ResourceType.BROKER, "1")["log.retention.ms"]
    assert entry.value == "1800000"
    assert entry.source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    assert describe(admin, ResourceType.TOPIC, plain)["retention.ms"].value == "1800000"

    # refused, and nothing half-applied: read-only keys, bad values, unknown keys
    for ops, text in [({"log.dirs": "/elsewhere"}, "Cannot update these configs dynamically"),
                      ({"broker.id": "3"}, "Cannot update these configs dynamically"),
                      ({"message.max.bytes": "2000000", "log.segment.bytes": "1"}, "at least"),
                      ({"log.retention.ms": "abc"}, "log.retention.ms"),
                      ({"no.such.config": "1"}, "no.such.config")]:
        err = incremental(admin, "1", ops)
        assert err is not None and err.code() == INVALID_CONFIG, (ops, err)
        assert text in err.str(), (ops, err.str())
    assert describe(admin, ResourceType.BROKER, "1")["message.max.bytes"].source == \
        ConfigSource.DEFAULT_CONFIG.value
    code, message = alter_default(b, {"log.retention.ms": "-"})
    assert code == INVALID_CONFIG and "log.retention.ms" in message
    # validate_only changes nothing; another broker's id is refused
    assert incremental(admin, "1", {"message.max.bytes": "2000000"}, validate_only=True) is None
    assert describe(admin, ResourceType.BROKER, "1")["message.max.bytes"].value == "1048588"
    code, message = alter_default(b, {"message.max.bytes": "2000000"}, name="7")
    assert code == INVALID_REQUEST and "Unexpected broker id" in message

    # a restart keeps both layers
    b.restart()
    admin = admin_for(b)
    entries = describe(admin, ResourceType.BROKER, "1")
    assert entries["log.retention.ms"].value == "1800000"
    assert entries["log.segment.bytes"].source == \
        ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
    assert describe(admin, ResourceType.TOPIC, plain)["segment.bytes"].value == "1048576"

    # deleting the broker's value falls back to the default
    assert incremental(admin, "1", {"log.retention.ms": None}) is None
    assert describe(admin, ResourceType.TOPIC, plain)["retention.ms"].value == "3600000"


def test_kafka_python_alter_configs_on_broker(broker):
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    try:
        def alter(configs: dict[str, str]) -> str:  # AlterConfigs (33), not incremental
            result = admin.alter_configs([KConfigResource(ConfigResourceType.BROKER, "1",
                                                          configs=configs)],
                                         incremental=False, raise_on_unknown=False)
            return result["broker"]["1"]

        assert alter({"log.retention.bytes": "1000000"}) == "OK"
        refused = alter({"zookeeper.connect": "elsewhere:2181"})
        assert "Error 40" in refused and "Set(zookeeper.connect)" in refused
        described = admin.describe_configs([KConfigResource(ConfigResourceType.BROKER, "1")])
        entry = described["broker"]["1"]["log.retention.bytes"]
        assert entry["value"] == "1000000"
        assert entry["config_source"] == "DYNAMIC_BROKER_CONFIG"
        assert entry["read_only"] is False
    finally:
        admin.close()


def _lines(result) -> list[str]:
    return ok(result).stdout.splitlines()


def test_strom_configs_round_trips(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 1)
    assert _lines(strom(broker, "configs", "--alter", "--entity-type", "topics",
                        "--entity-name", topic_name, "--add-config",
                        "retention.ms=60000,cleanup.policy=[compact,delete]")) == [
        f"Completed updating config for topic {topic_name}."]
    assert _lines(strom(broker, "configs", "--describe", "--entity-type", "topics",
                        "--entity-name", topic_name)) == [
        f"Dynamic configs for topic {topic_name} are:",
        "  cleanup.policy=compact,delete sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:"
        "cleanup.policy=compact,delete, DEFAULT_CONFIG:log.cleanup.policy=delete}",
        "  retention.ms=60000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=60000}",
    ]
    ok(strom(broker, "configs", "--alter", "--topic", topic_name, "--delete-config",
             "cleanup.policy"))
    lines = _lines(strom(broker, "configs", "--describe", "--topic", topic_name))
    assert [x.split("=")[0].strip() for x in lines[1:]] == ["retention.ms"]
    all_lines = _lines(strom(broker, "configs", "--describe", "--all", "--topic", topic_name))
    assert all_lines[0] == f"All configs for topic {topic_name} are:"
    assert "  segment.bytes=1073741824 sensitive=false synonyms={DEFAULT_CONFIG:" \
           "log.segment.bytes=1073741824}" in all_lines

    # brokers: one broker and the cluster default
    assert _lines(strom(broker, "configs", "--alter", "--entity-type", "brokers",
                        "--entity-default", "--add-config", "log.retention.ms=7200000")) == [
        "Completed updating default config for brokers in the cluster."]
    assert _lines(strom(broker, "configs", "--alter", "--entity-type", "brokers",
                        "--entity-name", "1", "--add-config", "log.retention.ms=3600000")) == [
        "Completed updating config for broker 1."]
    assert _lines(strom(broker, "configs", "--describe", "--entity-type", "brokers")) == [
        "Dynamic configs for broker 1 are:",
        "  log.retention.ms=3600000 sensitive=false synonyms={DYNAMIC_BROKER_CONFIG:"
        "log.retention.ms=3600000, DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.ms=7200000, "
        "DEFAULT_CONFIG:log.retention.hours=168}",
        "Default configs for brokers in the cluster are:",
        "  log.retention.ms=7200000 sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:"
        "log.retention.ms=7200000, DEFAULT_CONFIG:log.retention.hours=168}",
    ]
    ok(strom(broker, "configs", "--alter", "--broker", "1", "--delete-config",
             "log.retention.ms"))
    assert _lines(strom(broker, "configs", "--describe", "--broker", "1")) == [
        "Dynamic configs for broker 1 are:"]
    ok(strom(broker, "configs", "--alter", "--entity-type", "brokers", "--entity-default",
             "--delete-config", "log.retention.ms"))
    assert _lines(strom(broker, "configs", "--describe", "--entity-type", "brokers",
                        "--entity-default")) == ["Default configs for brokers in the cluster are:"]

    # broker loggers: Python's loggers with log4j's level names, set at run time
    loggers = _lines(strom(broker, "configs", "--describe", "--entity-type", "broker-loggers",
                           "--entity-name", "1"))
    assert loggers[0] == "Dynamic configs for broker-logger 1 are:"
    assert "  root=INFO sensitive=false synonyms={}" in loggers
    assert "  strom.replication.partition=INFO sensitive=false synonyms={}" in loggers
    assert _lines(strom(broker, "configs", "--alter", "--entity-type", "broker-loggers",
                        "--entity-name", "1", "--add-config",
                        "strom.replication.partition=DEBUG")) == [
        "Completed updating config for broker-logger 1."]
    assert "  strom.replication.partition=DEBUG sensitive=false synonyms={}" in _lines(strom(
        broker, "configs", "--describe", "--entity-type", "broker-loggers", "--entity-name", "1"))

    # errors: one line on stderr, exit status 1
    for args, text in [
        (("--alter", "--broker", "1", "--add-config", "log.dirs=/x"),
         "Cannot update these configs dynamically: Set(log.dirs)"),
        (("--alter", "--broker", "1", "--delete-config", "log.retention.ms"),
         "Invalid config(s): log.retention.ms"),
        (("--alter", "--topic", topic_name, "--add-config", "retention.ms"),
         "must be in the format \"key=val\""),
        (("--alter", "--entity-type", "broker-loggers", "--entity-name", "1", "--add-config",
          "strom.replication.partition=LOUD"), "not a supported log level"),
        (("--alter", "--entity-type", "broker-loggers", "--entity-name", "1",
          "--delete-config", "root"), "Removing the log level of the root logger"),
    ]:
        result = strom(broker, "configs", *args)
        assert result.returncode == 1, (args, result)
        assert text in result.stderr, (args, result.stderr)


def test_connection_limit_follows_a_dynamic_change(broker):
    from strom.testing.wire import KafkaSocket, api_versions_v0, parse_api_versions_v0

    def served(timeout: float = 15) -> KafkaSocket:
        """A connection the broker answers (retried while it still counts a just-closed
        one: it notices closes asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            sock = KafkaSocket("127.0.0.1", broker.port)
            try:
                parse_api_versions_v0(sock.roundtrip(api_versions_v0(1)))
                return sock
            except Exception:  # noqa: BLE001 - closed by the broker
                sock.close()
            assert time.monotonic() < deadline, "no connection slot came free"
            time.sleep(0.05)

    assert alter_default(broker, {"max.connections.per.ip": "2"}, name="1") == (0, None)
    first, second = served(), served()
    third = KafkaSocket("127.0.0.1", broker.port)
    assert third.wait_closed(timeout=10)  # over the new limit: closed at once
    third.close()
    first.close()
    assert alter_default(broker, {"max.connections.per.ip": None}, name="1") == (0, None)
    more = [served() for _ in range(3)]  # back to the default limit
    for s in (second, *more):
        s.close()
