"""docker/entrypoint.py, the container's entry point, tested without a container engine:
its KAFKA_*/STROM_* environment mapping, the configs compose.yaml sets, and a real broker
started through it."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from strom.config import BrokerConfig
from strom.testing.broker import BrokerProcess

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "entrypoint.py"


@pytest.fixture(scope="module")
def entrypoint():
    spec = importlib.util.spec_from_file_location("strom_docker_entrypoint", ENTRYPOINT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_environment_maps_to_configs(entrypoint):
    configs = entrypoint.configs_from({
        "KAFKA_NUM_PARTITIONS": "6",
        "STROM_NUM_PARTITIONS": "8",  # STROM_ wins
        "KAFKA_LOG_RETENTION_MS": "1000",
        "KAFKA_ZOOKEEPER_CONNECT": "zk:2181",
        "KAFKA_CONFLUENT_SUPPORT__METRICS___ENABLE": "x",  # __ -> _, ___ -> -
        "KAFKA_HEAP_OPTS": "-Xmx1g", "KAFKA_JMX_PORT": "9999", "KAFKA_LOG4J_ROOT_LOGLEVEL": "x",
        "STROM_LOG_LEVEL": "DEBUG", "PATH": "/usr/bin", "KAFKA_": "",
    })
    assert configs == {
        "log.dirs": "/var/lib/strom/data",
        "listeners": "PLAINTEXT://0.0.0.0:9092",
        "advertised.listeners": "PLAINTEXT://localhost:9092",
        "num.partitions": "8",
        "log.retention.ms": "1000",
        "zookeeper.connect": "zk:2181",
        "confluent.support_metrics-enable": "x",
    }
    cmd = entrypoint.command({"STROM_LOG_LEVEL": "DEBUG", "KAFKA_LOG_DIRS": "/d"}, ["--x"])
    assert cmd[1:6] == ["-m", "strom", "server", "--log-level", "DEBUG"]
    assert "log.dirs=/d" in cmd and cmd[-1] == "--x"


def test_compose_sets_only_known_configs(entrypoint):
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    brokers = [s for name, s in services.items() if name.startswith("broker")]
    assert len(brokers) == 3
    ids = set()
    for service in brokers:
        configs = entrypoint.configs_from(service["environment"])
        parsed = BrokerConfig(configs)
        assert parsed.unknown == {}
        ids.add(parsed.node_id)
    assert ids == {1, 2, 3}


def test_a_broker_started_through_the_entrypoint(monkeypatch, tmp_path):
    broker = BrokerProcess(argv_template=[sys.executable, str(ENTRYPOINT)])
    listener = f"PLAINTEXT://{broker.bootstrap}"
    for name, value in {"KAFKA_LISTENERS": listener, "KAFKA_ADVERTISED_LISTENERS": listener,
                        "KAFKA_LOG_DIRS": str(tmp_path / "data"), "STROM_NUM_PARTITIONS": "6",
                        "KAFKA_HEAP_OPTS": "-Xmx1g"}.items():
        monkeypatch.setenv(name, value)
    with broker:
        topic = f"auto-{uuid.uuid4().hex[:8]}"
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        producer.produce(topic, b"x")
        assert producer.flush(30) == 0
        md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=10)
        assert len(md.topics[topic].partitions) == 6
    assert (tmp_path / "data" / "meta.properties").exists()
