"""Dynamic broker configs without sockets: BrokerConfig's layers (per-broker > cluster
default > static > default), the topic defaults they give, Kafka's refusals, and
DynamicBrokerConfigs on the local metadata store (persisted, followed by a watch)."""

from __future__ import annotations

import asyncio
import json

import pytest

from strom.cluster import model
from strom.cluster.broker_configs import DynamicBrokerConfigs, validate_broker_configs
from strom.cluster.local_store import LocalMetadataStore
from strom.config import BrokerConfig, ConfigError, ConfigSource, TopicConfig


def test_layers_precedence_and_topic_defaults():
    config = BrokerConfig.load(None, ["log.retention.hours=24", "log.segment.bytes=2000000"])
    assert TopicConfig.of(config).get("retention.ms") == 24 * 3600 * 1000
    config.dynamic_default = {"log.segment.bytes": 1048576, "log.retention.ms": 60000}
    assert config.get("log.segment.bytes") == 1048576
    assert config.source("log.segment.bytes") == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
    topic = TopicConfig.of(config)
    assert topic.get("segment.bytes") == 1048576
    assert topic.get("retention.ms") == 60000  # log.retention.ms beats .hours, as in Kafka
    assert topic.source("retention.ms") == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
    config.dynamic_broker = {"log.retention.ms": 30000}
    topic = TopicConfig.of(config, {"segment.bytes": "5000000"})
    assert topic.get("retention.ms") == 30000
    assert topic.source("retention.ms") == ConfigSource.DYNAMIC_BROKER_CONFIG
    assert topic.get("segment.bytes") == 5000000  # an override still wins
    assert [s for _, _, s in TopicConfig.of(config).synonyms("retention.ms")] == [
        ConfigSource.DYNAMIC_BROKER_CONFIG, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
        ConfigSource.STATIC_BROKER_CONFIG]


@pytest.mark.parametrize("configs, text", [
    ({"log.dirs": "/x"}, "Cannot update these configs dynamically: Set(log.dirs)"),
    ({"zookeeper.connect": "h:1", "broker.id": "2"},
     "Cannot update these configs dynamically: Set(broker.id, zookeeper.connect)"),
    ({"log.retention.hours": "1"}, "Set(log.retention.hours)"),  # only .ms is dynamic
    ({"log.segment.bytes": "1"}, "log.segment.bytes"),
    ({"log.retention.ms": "soon"}, "log.retention.ms"),
    ({"no.such": "1"}, "no.such"),
])
def test_refusals(configs, text):
    with pytest.raises(ConfigError) as info:
        validate_broker_configs(1, configs)
    assert text in str(info.value)
    assert "ConfigResource(type=BROKER, name='1')" in str(info.value)


def test_stored_and_followed_on_the_local_store(tmp_path):
    async def run() -> None:
        store = LocalMetadataStore(str(tmp_path))
        await store.start()
        config = BrokerConfig.load(None, [])
        dynamic = DynamicBrokerConfigs(1, store, config)
        changes: list[int] = []
        dynamic.on_change(lambda: changes.append(1))
        await dynamic.start()
        await dynamic.write(None, {"log.retention.ms": "60000"})
        assert config.get("log.retention.ms") == 60000 and changes == [1]
        node = await store.get(model.broker_config_path(None))
        assert json.loads(node[0]) == {"version": 1, "config": {"log.retention.ms": "60000"}}
        # a write made elsewhere (another broker) reaches this one through its watch
        await store.create(model.broker_config_path(1),
                           model.encode_topic_config({"log.segment.bytes": "1048576"}))
        for _ in range(100):
            if config.get("log.segment.bytes") == 1048576:
                break
            await asyncio.sleep(0.01)
        assert config.source("log.segment.bytes") == ConfigSource.DYNAMIC_BROKER_CONFIG
        await store.close()
        # persisted: a new start reads both layers back
        store = LocalMetadataStore(str(tmp_path))
        await store.start()
        again = BrokerConfig.load(None, [])
        await DynamicBrokerConfigs(1, store, again).start()
        assert again.dynamic_default == {"log.retention.ms": 60000}
        assert again.dynamic_broker == {"log.segment.bytes": 1048576}
        await store.close()

    asyncio.run(run())
