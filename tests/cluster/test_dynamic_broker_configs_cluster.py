"""Dynamic broker configs in a ZooKeeper cluster: a cluster-wide default set through one
broker is stored at Kafka's /config/brokers/<default> and every broker applies it (each
answers DescribeConfigs for itself); a per-broker value stays on its broker."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)
from kazoo.client import KazooClient

from strom.cli._common import broker_request
from strom.protocol.messages import make, request_module, request_schema
from strom.testing.cluster import wait_until

pytestmark = pytest.mark.timeout(120)


def set_default(broker, key: str, value: str) -> None:
    """IncrementalAlterConfigs on the cluster default (""), sent to `broker` only."""
    mod = request_module(44, 0)
    request = make(request_schema(44, 0), validate_only=False, resources=(
        make(mod.AlterConfigsResource, resource_type=4, resource_name="", configs=(
            make(mod.AlterableConfig, name=key, config_operation=0, value=value),)),))
    result = broker_request("127.0.0.1", broker.port, request, "test", 15).responses[0]
    assert result.error_code == 0, result


def entry(admin: AdminClient, broker_id: int, key: str):
    res = ConfigResource(ResourceType.BROKER, str(broker_id))
    return admin.describe_configs([res], request_timeout=15)[res].result(timeout=15)[key]


def test_default_set_through_one_broker_reaches_all(make_cluster):
    cluster = make_cluster(3)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    set_default(cluster.brokers[1], "log.retention.ms", "5400000")

    def everywhere(value: str, source: ConfigSource, brokers=(1, 2, 3)) -> bool:
        return all(entry(admin, b, "log.retention.ms").value == value
                   and entry(admin, b, "log.retention.ms").source == source.value
                   for b in brokers)

    wait_until(lambda: everywhere("5400000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG), 20)

    zk = KazooClient(hosts=cluster.zk_connect)
    zk.start(timeout=10)
    try:
        data, _ = zk.get("/config/brokers/<default>")
        assert json.loads(data) == {"version": 1, "config": {"log.retention.ms": "5400000"}}
    finally:
        zk.stop()
        zk.close()

    # broker 2's own value wins on broker 2 only
    res = ConfigResource(ResourceType.BROKER, "2", incremental_configs=[
        ConfigEntry("log.retention.ms", "600000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res], request_timeout=15)[res].result(timeout=15)
    assert everywhere("600000", ConfigSource.DYNAMIC_BROKER_CONFIG, brokers=(2,))
    assert everywhere("5400000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG, brokers=(1, 3))
