"""strom.config: server.properties parsing, broker config validation and synonyms, topic
configs and where their values come from."""

from __future__ import annotations

import logging

import pytest

from strom.config import (
    BrokerConfig,
    ConfigError,
    ConfigSource,
    TopicConfig,
    parse_listener,
    render,
    validate_topic_configs,
)

HOUR_MS = 3_600_000


# --- BrokerConfig.load --------------------------------------------------------------------


def write(tmp_path, text: str) -> str:
    path = tmp_path / "server.properties"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_load_file_and_overrides(tmp_path):
    path = write(tmp_path, "node.id=3\nnum.partitions=4\nlog.dirs=/data/a, /data/b\n"
                           "auto.create.topics.enable=false\n")
    config = BrokerConfig.load(path, ["num.partitions=6", "log.segment.bytes = 1048576"])
    assert config.get("num.partitions") == 6  # the override wins
    assert config.get("log.segment.bytes") == 1048576
    assert config.get("auto.create.topics.enable") is False
    assert config.node_id == 3
    assert config.log_dirs == ["/data/a", "/data/b"]
    assert config.get("default.replication.factor") == 1  # a default
    assert config.source("num.partitions") == ConfigSource.STATIC_BROKER_CONFIG
    assert config.source("default.replication.factor") == ConfigSource.DEFAULT_CONFIG


def test_load_without_file():
    config = BrokerConfig.load(None, ["broker.id=9"])
    assert config.node_id == 9
    assert config.log_dirs == ["strom-data"]
    assert config.listeners() == [("PLAINTEXT", "127.0.0.1", 9092)]


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="Cannot read"):
        BrokerConfig.load(str(tmp_path / "absent.properties"))


def test_override_without_equals():
    with pytest.raises(ConfigError, match="key=value"):
        BrokerConfig.load(None, ["num.partitions"])


def test_unknown_key_is_warned_not_fatal(tmp_path, caplog):
    path = write(tmp_path, "no.such.setting=1\nnum.partitions=2\n")
    with caplog.at_level(logging.WARNING, logger="strom.config"):
        config = BrokerConfig.load(path)
    assert config.get("num.partitions") == 2
    assert config.unknown == {"no.such.setting": "1"}
    assert any("no.such.setting" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("override, key", [
    ("num.partitions=abc", "num.partitions"),
    ("num.partitions=0", "num.partitions"),
    ("log.segment.bytes=13", "log.segment.bytes"),
    ("node.id=-2", "node.id"),
    ("auto.create.topics.enable=yes", "auto.create.topics.enable"),
    ("log.retention.ms=1.5", "log.retention.ms"),
    ("message.max.bytes=99999999999", "message.max.bytes"),
    ("log.message.timestamp.type=WallClock", "log.message.timestamp.type"),
    ("compression.type=brotli", "compression.type"),
    ("log.cleanup.policy=delete,shred", "log.cleanup.policy"),
    ("listeners=localhost:9092", "listeners"),
    ("listeners=PLAINTEXT://:99999", "listeners"),
    ("advertised.listeners=PLAINTEXT//host:9092", "advertised.listeners"),
])
def test_invalid_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        BrokerConfig.load(None, [override])
    assert key in str(e.value)


def test_node_id_and_broker_id():
    assert BrokerConfig.load(None, ["node.id=5"]).node_id == 5
    assert BrokerConfig.load(None, ["broker.id=6"]).node_id == 6
    assert BrokerConfig.load(None, ["node.id=7", "broker.id=7"]).node_id == 7
    assert BrokerConfig.load(None, []).node_id == 1  # neither set: a single broker is 1
    # -1 means unset, as Kafka's default: the other one decides
    assert BrokerConfig.load(None, ["node.id=-1", "broker.id=4"]).node_id == 4
    assert BrokerConfig.load(None, ["node.id=4", "broker.id=-1"]).node_id == 4
    with pytest.raises(ConfigError, match="disagree"):
        BrokerConfig.load(None, ["node.id=1", "broker.id=2"])


def test_listeners():
    assert parse_listener("PLAINTEXT://:9092") == ("PLAINTEXT", "", 9092)
    assert parse_listener("sasl_ssl://broker.example:9093") == ("SASL_SSL", "broker.example",
                                                                  9093)
    assert parse_listener("PLAINTEXT://[::1]:9092") == ("PLAINTEXT", "::1", 9092)
    config = BrokerConfig.load(None, ["listeners=PLAINTEXT://0.0.0.0:9092",
                                      "advertised.listeners=PLAINTEXT://broker1:9092"])
    assert config.listeners() == [("PLAINTEXT", "0.0.0.0", 9092)]
    assert config.advertised() == [("PLAINTEXT", "broker1", 9092)]


# --- synonyms -----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, expected, synonym", [
    ([], 7 * 24 * HOUR_MS, None),
    (["log.retention.hours=2"], 2 * HOUR_MS, "log.retention.hours"),
    (["log.retention.hours=2", "log.retention.minutes=30"], 30 * 60_000,
     "log.retention.minutes"),
    (["log.retention.hours=2", "log.retention.minutes=30", "log.retention.ms=1234"], 1234,
     "log.retention.ms"),
    (["log.retention.ms=-1"], -1, "log.retention.ms"),
    (["log.retention.ms=-5"], -1, "log.retention.ms"),
    (["log.retention.hours=-1"], -1, "log.retention.hours"),
    (["log.retention.minutes=-1"], -1, "log.retention.minutes"),
])
def test_retention_ms_synonyms(overrides, expected, synonym):
    broker = BrokerConfig.load(None, overrides)
    value, source, used = broker.broker_default("retention.ms")
    assert (value, used) == (expected, synonym)
    assert source == (ConfigSource.DEFAULT_CONFIG if synonym is None
                      else ConfigSource.STATIC_BROKER_CONFIG)
    assert TopicConfig(broker).get("retention.ms") == expected


def test_segment_ms_synonyms():
    assert TopicConfig(BrokerConfig.load(None, [])).get("segment.ms") == 168 * HOUR_MS
    hours = TopicConfig(BrokerConfig.load(None, ["log.roll.hours=2"]))
    assert hours.get("segment.ms") == 2 * HOUR_MS
    both = TopicConfig(BrokerConfig.load(None, ["log.roll.hours=2", "log.roll.ms=5000"]))
    assert both.get("segment.ms") == 5000


def test_other_synonyms():
    broker = BrokerConfig.load(None, [
        "log.segment.bytes=2048", "message.max.bytes=5000", "log.cleanup.policy=compact",
        "log.message.timestamp.type=LogAppendTime", "log.index.interval.bytes=100",
        "log.retention.bytes=999"])
    topic = TopicConfig(broker)
    assert topic.get("segment.bytes") == 2048
    assert topic.get("max.message.bytes") == 5000
    assert topic.get("cleanup.policy") == ["compact"] and topic.compact
    assert topic.get("message.timestamp.type") == "LogAppendTime" and topic.log_append_time
    assert topic.get("index.interval.bytes") == 100
    assert topic.get("retention.bytes") == 999


# --- TopicConfig --------------------------------------------------------------------------


def test_topic_config_sources():
    broker = BrokerConfig.load(None, ["log.segment.bytes=2048"])
    topic = TopicConfig(broker, validate_topic_configs({"retention.ms": "1000"}))
    assert topic.get("retention.ms") == 1000
    assert topic.source("retention.ms") == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert topic.get("segment.bytes") == 2048
    assert topic.source("segment.bytes") == ConfigSource.STATIC_BROKER_CONFIG
    assert topic.get("segment.ms") == 7 * 24 * HOUR_MS
    assert topic.source("segment.ms") == ConfigSource.DEFAULT_CONFIG
    assert topic.broker_value("retention.ms") == 7 * 24 * HOUR_MS
    assert topic.retention_ms == 1000  # attribute access, dots as underscores
    assert not topic.compact and not topic.log_append_time


def test_topic_config_of_stored_overrides():
    """TopicConfig.of: the stored strings of /config/topics/<t> over the broker's synonyms."""
    broker = BrokerConfig.load(None, ["log.retention.hours=2", "log.segment.bytes=4096",
                                      "log.cleanup.policy=compact"])
    stored = {"retention.ms": "1000", "cleanup.policy": "compact,delete"}
    topic = TopicConfig.of(broker, stored)
    assert topic.get("retention.ms") == 1000
    assert topic.source("retention.ms") == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert topic.get("segment.bytes") == 4096
    assert topic.source("segment.bytes") == ConfigSource.STATIC_BROKER_CONFIG
    assert topic.get("cleanup.policy") == ["compact", "delete"]
    assert topic.get("max.message.bytes") == 1048588
    assert topic.source("max.message.bytes") == ConfigSource.DEFAULT_CONFIG
    for empty in (None, {}):
        defaults = TopicConfig.of(broker, empty)
        assert defaults.overrides == {}
        assert defaults.get("retention.ms") == 2 * HOUR_MS and defaults.compact
    with pytest.raises(ConfigError, match="log.retention.ms"):
        TopicConfig.of(broker, {"log.retention.ms": "5"})  # a broker name is no topic key
    with pytest.raises(ConfigError, match="segment.bytes"):
        TopicConfig.of(broker, {"segment.bytes": "ten"})


def test_topic_config_synonyms():
    broker = BrokerConfig.load(None, ["log.retention.hours=2", "log.retention.minutes=30"])
    topic = TopicConfig.of(broker, {"retention.ms": "1000"})
    assert topic.synonyms("retention.ms") == [
        ("retention.ms", "1000", ConfigSource.DYNAMIC_TOPIC_CONFIG),
        ("log.retention.minutes", "30", ConfigSource.STATIC_BROKER_CONFIG),
        ("log.retention.hours", "2", ConfigSource.STATIC_BROKER_CONFIG),
    ]  # no DEFAULT_CONFIG entry: log.retention.ms, the first synonym, has no default
    assert topic.synonyms("segment.bytes") == [
        ("log.segment.bytes", "1073741824", ConfigSource.DEFAULT_CONFIG)]
    assert topic.synonyms("min.insync.replicas") == [
        ("min.insync.replicas", "1", ConfigSource.DEFAULT_CONFIG)]


def test_render():
    assert render(True) == "true"
    assert render(["compact", "delete"]) == "compact,delete"
    assert render(None) is None
    assert render(12) == "12"


def test_validate_topic_configs():
    parsed = validate_topic_configs({
        "retention.ms": "-1", "cleanup.policy": "compact,delete",
        "min.cleanable.dirty.ratio": "0.25", "preallocate": "TRUE",
        "message.timestamp.type": "LogAppendTime"})
    assert parsed == {"retention.ms": -1, "cleanup.policy": ["compact", "delete"],
                      "min.cleanable.dirty.ratio": 0.25, "preallocate": True,
                      "message.timestamp.type": "LogAppendTime"}


@pytest.mark.parametrize("configs, key", [
    ({"retention.msec": "1"}, "retention.msec"),
    ({"log.retention.ms": "1"}, "log.retention.ms"),  # a broker key, not a topic key
    ({"retention.ms": "soon"}, "retention.ms"),
    ({"retention.ms": "-2"}, "retention.ms"),
    ({"segment.bytes": "10"}, "segment.bytes"),
    ({"segment.ms": "0"}, "segment.ms"),
    ({"min.insync.replicas": "0"}, "min.insync.replicas"),
    ({"cleanup.policy": "forever"}, "cleanup.policy"),
    ({"message.timestamp.type": "createtime"}, "message.timestamp.type"),
    ({"min.cleanable.dirty.ratio": "1.5"}, "min.cleanable.dirty.ratio"),
    ({"compression.type": "lzma"}, "compression.type"),
    ({"unclean.leader.election.enable": "maybe"}, "unclean.leader.election.enable"),
    ({"retention.ms": None}, "retention.ms"),
])
def test_validate_topic_configs_rejects(configs, key):
    with pytest.raises(ConfigError) as e:
        validate_topic_configs(configs)
    assert key in str(e.value)
