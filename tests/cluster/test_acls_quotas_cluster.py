"""ACLs and client quotas on ZooKeeper: written through one broker at Kafka's znodes
(/kafka-acl, /kafka-acl-extended/prefixed, /kafka-acl-changes, /config/users,
/config/clients, /config/changes) and followed by the other broker by watch, without a
restart. (super.users holds User:ANONYMOUS: the brokers talk PLAINTEXT to each other, as a
Kafka cluster with an authorizer and PLAINTEXT inter-broker traffic must.)"""

from __future__ import annotations

import json

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from kazoo.client import KazooClient

from strom.cli._common import broker_request
from strom.protocol.messages import make, request_module, request_schema
from strom.testing.cluster import wait_until

pytestmark = pytest.mark.timeout(120)

ANY = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                       AclOperation.ANY, AclPermissionType.ANY)


def _quotas_seen_by(broker) -> dict:
    mod = request_module(48, 1)
    req = make(request_schema(48, 1), strict=False, components=(
        make(mod.ComponentData, entity_type="user", match_type=2, match=None),))
    resp = broker_request("127.0.0.1", broker.port, req, "test", 15)
    return {tuple((e.entity_type, e.entity_name) for e in x.entity):
            {v.key: v.value for v in x.values} for x in resp.entries}


def test_acls_and_quotas_follow_through_zookeeper(make_cluster):
    cluster = make_cluster(2, overrides={
        "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
        "super.users": "User:ANONYMOUS"})
    one = AdminClient({"bootstrap.servers": f"127.0.0.1:{cluster.brokers[1].port}"})
    two = AdminClient({"bootstrap.servers": f"127.0.0.1:{cluster.brokers[2].port}"})
    bindings = [AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL,
                           "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW),
                AclBinding(ResourceType.GROUP, "team-", ResourcePatternType.PREFIXED,
                           "User:bob", "10.0.0.1", AclOperation.ALL, AclPermissionType.DENY)]
    for f in one.create_acls(bindings).values():
        f.result(15)
    wait_until(lambda: len(two.describe_acls(ANY).result(15)) == 2, 20)

    mod = request_module(49, 1)
    req = make(request_schema(49, 1), validate_only=False, entries=(make(
        mod.EntryData, entity=(make(mod.EntityData, entity_type="user", entity_name="alice"),),
        ops=(make(mod.OpData, key="producer_byte_rate", value=1048576.0, remove=False),)),))
    assert broker_request("127.0.0.1", cluster.brokers[1].port, req, "test", 15
                          ).entries[0].error_code == 0
    wait_until(lambda: _quotas_seen_by(cluster.brokers[2]) == {
        (("user", "alice"),): {"producer_byte_rate": 1048576.0}}, 20)

    zk = KazooClient(hosts=cluster.zk_connect)
    zk.start(timeout=10)
    try:
        data, _ = zk.get("/kafka-acl/Topic/orders")
        assert json.loads(data) == {"version": 1, "acls": [
            {"principal": "User:alice", "permissionType": "Allow", "operation": "Read",
             "host": "*"}]}
        data, _ = zk.get("/kafka-acl-extended/prefixed/Group/team-")
        assert json.loads(data)["acls"][0] == {
            "principal": "User:bob", "permissionType": "Deny", "operation": "All",
            "host": "10.0.0.1"}
        assert zk.get_children("/kafka-acl-changes")
        assert zk.get_children("/kafka-acl-extended-changes")
        data, _ = zk.get("/config/users/alice")
        assert json.loads(data) == {"version": 1, "config": {"producer_byte_rate": "1048576"}}
        changes = sorted(zk.get_children("/config/changes"))
        assert json.loads(zk.get(f"/config/changes/{changes[-1]}")[0]) == {
            "version": 2, "entity_path": "users/alice"}
    finally:
        zk.stop()

    flt = AclBindingFilter(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, None,
                           None, AclOperation.ANY, AclPermissionType.ANY)
    assert len(two.delete_acls([flt])[flt].result(15)) == 1
    wait_until(lambda: len(one.describe_acls(ANY).result(15)) == 1, 20)
