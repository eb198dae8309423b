"""ACL semantics (strom.security.acls) and the authorizer's store layout
(strom.security.authorizer) on the local MetadataStore: Kafka's paths and JSON, change
notifications, and a second authorizer on the same store following a change."""

from __future__ import annotations

import asyncio
import json

import pytest

from strom.cluster.local_store import LocalMetadataStore
from strom.security.acls import (
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    PatternType,
    PermissionType,
    ResourcePattern,
    ResourceType,
    binding_problem,
    from_zk_name,
    zk_name,
)
from strom.security.authorizer import Authorizer, parse_super_users

Op, Res, Pat, Perm = AclOperation, ResourceType, PatternType, PermissionType


def acl(name, principal="User:alice", op=Op.READ, perm=Perm.ALLOW, pat=Pat.LITERAL,
        rtype=Res.TOPIC, host="*"):
    return AclBinding(ResourcePattern(rtype, name, pat),
                      AccessControlEntry(principal, host, op, perm))


def authorizer_with(bindings, super_users=(), allow_if_none=False):
    a = Authorizer(None, frozenset(super_users), allow_if_none)  # type: ignore[arg-type]
    for b in bindings:
        a.acls[b.pattern] = a.acls.get(b.pattern, frozenset()) | {b.entry}
    return a


def test_literal_prefixed_and_wildcard_patterns():
    a = authorizer_with([acl("orders"), acl("logs-", pat=Pat.PREFIXED), acl("*", "User:bob")])
    assert a.authorize("User:alice", "1.2.3.4", Op.READ, Res.TOPIC, "orders")
    assert not a.authorize("User:alice", "1.2.3.4", Op.READ, Res.TOPIC, "orders2")
    assert a.authorize("User:alice", "1.2.3.4", Op.READ, Res.TOPIC, "logs-app")
    assert not a.authorize("User:alice", "1.2.3.4", Op.READ, Res.GROUP, "logs-app")
    assert a.authorize("User:bob", "h", Op.READ, Res.TOPIC, "anything")
    assert not a.authorize("User:carol", "h", Op.READ, Res.TOPIC, "anything")


def test_implied_operations_and_deny_wins():
    a = authorizer_with([acl("t", op=Op.WRITE), acl("c", op=Op.ALTER_CONFIGS),
                         acl("t", "User:*", op=Op.READ, perm=Perm.DENY)])
    assert a.authorize("User:alice", "h", Op.WRITE, Res.TOPIC, "t")
    assert a.authorize("User:alice", "h", Op.DESCRIBE, Res.TOPIC, "t")   # WRITE -> DESCRIBE
    assert not a.authorize("User:alice", "h", Op.READ, Res.TOPIC, "t")   # deny of User:*
    assert a.authorize("User:alice", "h", Op.DESCRIBE_CONFIGS, Res.TOPIC, "c")
    assert not a.authorize("User:alice", "h", Op.ALTER, Res.TOPIC, "c")
    deny_describe = authorizer_with([acl("t", op=Op.ALL),
                                     acl("t", op=Op.DESCRIBE, perm=Perm.DENY)])
    # a DENY of DESCRIBE does not deny READ (implication is for ALLOW only)
    assert deny_describe.authorize("User:alice", "h", Op.READ, Res.TOPIC, "t")
    assert not deny_describe.authorize("User:alice", "h", Op.DESCRIBE, Res.TOPIC, "t")
    deny_all = authorizer_with([acl("t-", op=Op.ALL, pat=Pat.PREFIXED),
                                acl("t-x", op=Op.ALL, perm=Perm.DENY)])
    assert not deny_all.authorize("User:alice", "h", Op.WRITE, Res.TOPIC, "t-x")
    assert deny_all.authorize("User:alice", "h", Op.WRITE, Res.TOPIC, "t-y")


def test_hosts_super_users_and_no_acl_found():
    a = authorizer_with([acl("t", host="10.0.0.1")], super_users={"User:root"})
    assert a.authorize("User:alice", "10.0.0.1", Op.READ, Res.TOPIC, "t")
    assert not a.authorize("User:alice", "10.0.0.2", Op.READ, Res.TOPIC, "t")
    assert a.authorize("User:root", "10.0.0.2", Op.DELETE, Res.TOPIC, "t")
    assert not a.authorize("User:alice", "h", Op.READ, Res.TOPIC, "uncovered")
    open_ = authorizer_with([acl("t")], allow_if_none=True)
    assert open_.authorize("User:x", "h", Op.READ, Res.TOPIC, "uncovered")
    assert not open_.authorize("User:x", "h", Op.READ, Res.TOPIC, "t")  # covered: no ACL of x
    assert parse_super_users(" User:a; User:b ;") == {"User:a", "User:b"}


def test_authorized_operations_and_by_resource_type():
    a = authorizer_with([acl("t", op=Op.READ), acl("w-", op=Op.WRITE, pat=Pat.PREFIXED)])
    bits = a.authorized_operations("User:alice", "h", Res.TOPIC, "t")
    assert bits == (1 << Op.READ) | (1 << Op.DESCRIBE)
    assert a.authorize_by_resource_type("User:alice", "h", Op.WRITE, Res.TOPIC)
    assert not a.authorize_by_resource_type("User:bob", "h", Op.WRITE, Res.TOPIC)


def test_filters():
    bindings = [acl("orders"), acl("ord", pat=Pat.PREFIXED, op=Op.WRITE),
                acl("*", "User:bob"), acl("g", rtype=Res.GROUP)]
    match = AclBindingFilter(Res.TOPIC, "orders", Pat.MATCH, None, None, Op.ANY, Perm.ANY)
    assert [b for b in bindings if match.matches(b)] == bindings[:3]
    exact = AclBindingFilter(Res.ANY, "ord", Pat.ANY, None, None, Op.WRITE, Perm.ALLOW)
    assert [b for b in bindings if exact.matches(b)] == [bindings[1]]
    by_principal = AclBindingFilter(Res.ANY, None, Pat.ANY, "User:bob", None, Op.ANY, Perm.ANY)
    assert [b for b in bindings if by_principal.matches(b)] == [bindings[2]]
    assert AclBindingFilter(Res.UNKNOWN, None, Pat.ANY, None, None, Op.ANY,
                            Perm.ANY).problem() is not None


@pytest.mark.parametrize("binding, words", [
    (acl("t", pat=Pat.MATCH), "patternType"),
    (acl("t", pat=Pat.ANY), "patternType"),
    (acl("t", rtype=Res.ANY), "resourceType"),
    (acl("t", op=Op.ANY), "operation"),
    (acl("t", perm=Perm.ANY), "permissionType"),
    (acl(""), "empty resource name"),
    (acl("other", rtype=Res.CLUSTER), "kafka-cluster"),
    (acl("t", principal="alice"), "principal"),
])
def test_invalid_bindings(binding, words):
    assert words in binding_problem(binding)


def test_zk_names():
    assert zk_name(Res.TRANSACTIONAL_ID) == "TransactionalId"
    assert zk_name(Op.DESCRIBE_CONFIGS) == "DescribeConfigs"
    assert from_zk_name(Op, "ClusterAction") == Op.CLUSTER_ACTION
    assert from_zk_name(Perm, "Deny") == Perm.DENY


def test_store_layout_and_change_notifications(tmp_path):
    async def run():
        store = LocalMetadataStore(str(tmp_path))
        await store.start()
        a = Authorizer(store, frozenset(), False)
        b = Authorizer(store, frozenset(), False)  # another broker on the same store
        await a.start()
        await b.start()
        await a.create([acl("orders"), acl("logs-", pat=Pat.PREFIXED, op=Op.WRITE,
                                           perm=Perm.DENY)])
        data, _ = await store.get("/kafka-acl/Topic/orders")
        assert json.loads(data) == {"version": 1, "acls": [
            {"principal": "User:alice", "permissionType": "Allow", "operation": "Read",
             "host": "*"}]}
        data, _ = await store.get("/kafka-acl-extended/prefixed/Topic/logs-")
        assert json.loads(data)["acls"][0]["permissionType"] == "Deny"
        assert await store.get_children("/kafka-acl-changes") == ["acl_changes_0000000000"]
        change, _ = await store.get("/kafka-acl-changes/acl_changes_0000000000")
        assert change == b"Topic:orders"
        ext, _ = await store.get("/kafka-acl-extended-changes/acl_changes_0000000000")
        assert json.loads(ext) == {"version": 1, "resourceType": "Topic", "name": "logs-",
                                   "patternType": "Prefixed"}
        for _ in range(50):  # b follows by watch
            if b.authorize("User:alice", "h", Op.READ, Res.TOPIC, "orders"):
                break
            await asyncio.sleep(0.02)
        assert b.authorize("User:alice", "h", Op.READ, Res.TOPIC, "orders")
        flt = AclBindingFilter(Res.TOPIC, "orders", Pat.LITERAL, None, None, Op.ANY, Perm.ANY)
        assert [x.pattern.name for x in (await a.delete([flt]))[0]] == ["orders"]
        assert await store.get("/kafka-acl/Topic/orders") is None
        for _ in range(50):
            if not b.authorize("User:alice", "h", Op.READ, Res.TOPIC, "orders"):
                break
            await asyncio.sleep(0.02)
        assert not b.authorize("User:alice", "h", Op.READ, Res.TOPIC, "orders")
        await store.close()
    asyncio.run(run())
