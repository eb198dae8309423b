"""ACLs with real clients: a broker with the authorizer on and ACLs for User:ANONYMOUS (the
principal of a PLAINTEXT connection) written into its metadata store before it starts, as
kafka-acls once wrote them straight into ZooKeeper; then CreateAcls/DeleteAcls at run time.

The matrix: confluent-kafka, kafka-python, aiokafka and kcat are refused with
TOPIC_AUTHORIZATION_FAILED / GROUP_AUTHORIZATION_FAILED where no ACL allows them, allowed by
a PREFIXED and by a LITERAL ACL, a DENY beats the prefixed ALLOW, Metadata hides what may
not be described, and an ACL added (removed) at run time lets the client in (out).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    NewTopic,
    ResourcePatternType,
)
from confluent_kafka.admin import ResourceType as CkResourceType

from strom.cli._common import broker_request
from strom.cluster.local_store import LocalMetadataStore
from strom.protocol.messages import make, request_schema
from strom.security.acls import (
    AccessControlEntry,
    PatternType,
    PermissionType,
    ResourcePattern,
    ResourceType,
)
from strom.security.acls import AclBinding as Binding
from strom.security.acls import (
    AclOperation as Op,
)
from strom.security.authorizer import Authorizer
from strom.testing.kafka import admin_client

pytestmark = pytest.mark.timeout(120)

ANON = "User:ANONYMOUS"
TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED = 29, 30
INVALID_REQUEST, SECURITY_DISABLED = 42, 54


def _allow(rtype, name, op, pattern=PatternType.LITERAL, permission=PermissionType.ALLOW):
    return Binding(ResourcePattern(rtype, name, pattern),
                   AccessControlEntry(ANON, "*", op, permission))


SEEDED = [
    _allow(ResourceType.CLUSTER, "kafka-cluster", Op.ALTER),
    _allow(ResourceType.CLUSTER, "kafka-cluster", Op.DESCRIBE),
    _allow(ResourceType.CLUSTER, "kafka-cluster", Op.CREATE),
    _allow(ResourceType.TOPIC, "open-", Op.ALL, PatternType.PREFIXED),
    _allow(ResourceType.TOPIC, "open-denied", Op.WRITE, permission=PermissionType.DENY),
    _allow(ResourceType.GROUP, "g-", Op.READ, PatternType.PREFIXED),
]


def _seed(log_dir) -> None:
    async def write():
        store = LocalMetadataStore(str(log_dir))
        await store.start()
        authorizer = Authorizer(store, frozenset(), False)
        await authorizer.start()
        await authorizer.create(SEEDED)
        await store.close()
    asyncio.run(write())


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory):
    from strom.testing.broker import BrokerProcess
    log_dir = tmp_path_factory.mktemp("acl-broker")
    _seed(log_dir)
    b = BrokerProcess(log_dir, {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false", "num.partitions": 1,
        "offsets.topic.num.partitions": 1, "group.initial.rebalance.delay.ms": 0})
    b.start()
    admin = admin_client(b.bootstrap)
    for f in admin.create_topics([NewTopic(t, 1) for t in ("open-a", "open-denied", "secret")]).values():
        f.result(30)
    yield b
    b.stop()


def _produce(bootstrap: str, topic: str) -> KafkaError | None:
    errors: list = []
    p = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 10000,
                  "allow.auto.create.topics": False})
    p.produce(topic, b"v", on_delivery=lambda err, msg: errors.append(err))
    p.flush(20)
    return errors[0] if errors else KafkaError(KafkaError._MSG_TIMED_OUT)


def _consume_error(bootstrap: str, topic: str, group: str) -> int | None:
    """The first error the consumer reports, or None once it gets a record."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    c.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                return m.error().code()
            return None
        raise AssertionError("neither a record nor an error")
    finally:
        c.close()


def test_confluent_kafka_matrix(acl_broker):
    bs = acl_broker.bootstrap
    assert _produce(bs, "open-a") is None                        # PREFIXED ALLOW
    assert _produce(bs, "secret").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _produce(bs, "open-denied").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert _consume_error(bs, "open-a", "g-1") is None
    assert _consume_error(bs, "open-a", "other") == KafkaError.GROUP_AUTHORIZATION_FAILED
    admin = admin_client(bs)
    assert "secret" not in admin.list_topics(timeout=10).topics  # hidden
    assert "open-a" in admin.list_topics(timeout=10).topics
    # describe is implied by the prefixed ALL; open-denied is still visible (only WRITE
    # is denied)
    assert "open-denied" in admin.list_topics(timeout=10).topics
    seen = admin.describe_acls(AclBindingFilter(
        CkResourceType.ANY, None, ResourcePatternType.ANY, ANON, None, AclOperation.ANY,
        AclPermissionType.ANY)).result(10)
    assert len(seen) == len(SEEDED)


def test_acl_added_and_removed_at_run_time(acl_broker):
    bs = acl_broker.bootstrap
    admin = admin_client(bs)
    topic = "secret"
    binding = AclBinding(CkResourceType.TOPIC, topic, ResourcePatternType.LITERAL, ANON, "*",
                         AclOperation.WRITE, AclPermissionType.ALLOW)
    admin.create_acls([binding])[binding].result(10)
    assert _produce(bs, topic) is None
    assert topic in admin.list_topics(timeout=10).topics  # WRITE implies DESCRIBE
    flt = AclBindingFilter(CkResourceType.TOPIC, topic, ResourcePatternType.MATCH, None, None,
                           AclOperation.ANY, AclPermissionType.ANY)
    deleted = admin.delete_acls([flt])[flt].result(10)
    assert [b.name for b in deleted] == [topic]
    assert _produce(bs, topic).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_kafka_python_and_aiokafka_refused(acl_broker):
    import kafka
    from kafka.errors import TopicAuthorizationFailedError

    bs = acl_broker.bootstrap
    producer = kafka.KafkaProducer(bootstrap_servers=bs, max_block_ms=10000, retries=0)
    try:
        producer.send("open-a", b"v").get(timeout=20)
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send("secret", b"v").get(timeout=20)
    finally:
        producer.close(5)

    async def aio():
        import aiokafka
        from aiokafka.errors import TopicAuthorizationFailedError as AioDenied
        p = aiokafka.AIOKafkaProducer(bootstrap_servers=bs, request_timeout_ms=10000)
        await p.start()
        try:
            await p.send_and_wait("open-a", b"v")
            with pytest.raises(AioDenied):
                await p.send_and_wait("open-denied", b"v")
        finally:
            await p.stop()
    asyncio.run(aio())


@pytest.mark.skipif(not shutil.which("kcat"), reason="kcat is not installed")
def test_kcat_metadata_hides_and_produce_refused(acl_broker):
    bs = acl_broker.bootstrap
    listing = subprocess.run(["kcat", "-b", bs, "-L", "-J"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    assert '"open-a"' in listing and '"secret"' not in listing
    out = subprocess.run(["kcat", "-b", bs, "-P", "-t", "secret", "-X",
                          "message.timeout.ms=5000"], input="v\n", capture_output=True,
                         text=True, timeout=30)
    assert "authoriz" in (out.stderr + out.stdout).lower()


def _strom_acls(broker, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "strom", "acls", "--bootstrap-server",
                           broker.bootstrap, *args], capture_output=True, text=True,
                          timeout=60)


def test_strom_acls_cli(acl_broker):
    added = _strom_acls(acl_broker, "--add", "--allow-principal", "User:alice", "--producer",
                        "--idempotent", "--topic", "cli-", "--resource-pattern-type",
                        "prefixed")
    assert added.returncode == 0, added.stderr
    assert "name=cli-, patternType=PREFIXED" in added.stdout
    listed = _strom_acls(acl_broker, "--list", "--topic", "cli-x", "--resource-pattern-type",
                         "match")
    assert listed.stdout.count("principal=User:alice") == 3  # Write, Describe, Create
    assert "operation=WRITE" in listed.stdout
    cluster = _strom_acls(acl_broker, "--list", "--cluster", "--principal", "User:alice")
    assert "operation=IDEMPOTENT_WRITE" in cluster.stdout
    bad = _strom_acls(acl_broker, "--add", "--allow-principal", "User:alice", "--operation",
                      "ClusterAction", "--topic", "t")
    assert bad.returncode == 1 and "only supports operations" in bad.stderr
    removed = _strom_acls(acl_broker, "--remove", "--topic", "cli-", "--resource-pattern-type",
                          "prefixed")
    assert removed.returncode == 0 and removed.stdout.count("User:alice") == 3
    removed = _strom_acls(acl_broker, "--remove", "--allow-principal", "User:alice",
                          "--cluster", "--operation", "IdempotentWrite")
    assert removed.stdout.count("User:alice") == 1
    left = _strom_acls(acl_broker, "--list", "--principal", "User:alice")
    assert "User:alice" not in left.stdout


def _raw(broker, api_key: int, version: int, **fields):
    req = make(request_schema(api_key, version), **fields)
    return broker_request("127.0.0.1", broker.port, req, "acl-test", 10)


def test_bad_acl_input_gets_invalid_request(acl_broker):
    from strom.protocol.messages import request_module
    mod = request_module(30, 3)
    creations = [
        make(mod.AclCreation, resource_type=2, resource_name="t", resource_pattern_type=2,
             principal=ANON, host="*", operation=3, permission_type=3),     # MATCH
        make(mod.AclCreation, resource_type=4, resource_name="other", resource_pattern_type=3,
             principal=ANON, host="*", operation=3, permission_type=3),     # cluster name
        make(mod.AclCreation, resource_type=99, resource_name="t", resource_pattern_type=3,
             principal=ANON, host="*", operation=3, permission_type=3),     # unknown type
        make(mod.AclCreation, resource_type=2, resource_name="t", resource_pattern_type=3,
             principal="alice", host="*", operation=3, permission_type=3),  # no type
        make(mod.AclCreation, resource_type=2, resource_name="", resource_pattern_type=3,
             principal=ANON, host="*", operation=3, permission_type=3),     # empty name
    ]
    resp = _raw(acl_broker, 30, 3, creations=tuple(creations))
    assert [r.error_code for r in resp.results] == [INVALID_REQUEST] * 5
    assert all(r.error_message for r in resp.results)
    resp = _raw(acl_broker, 29, 3, resource_type_filter=99, resource_name_filter=None,
                pattern_type_filter=1, principal_filter=None, host_filter=None, operation=1,
                permission_type=1)
    assert resp.error_code == INVALID_REQUEST
    dmod = request_module(31, 3)
    resp = _raw(acl_broker, 31, 3, filters=(make(
        dmod.DeleteAclsFilter, resource_type_filter=2, resource_name_filter=None,
        pattern_type_filter=0, principal_filter=None, host_filter=None, operation=1,
        permission_type=1),))
    assert resp.filter_results[0].error_code == INVALID_REQUEST
    # the broker is still fine and nothing was created
    assert _produce(acl_broker.bootstrap, "open-a") is None


def test_security_disabled_without_authorizer(broker):
    resp = _raw(broker, 29, 1, resource_type_filter=1, resource_name_filter=None,
                pattern_type_filter=1, principal_filter=None, host_filter=None, operation=1,
                permission_type=1)
    assert resp.error_code == SECURITY_DISABLED
    admin = admin_client(broker.bootstrap)
    binding = AclBinding(CkResourceType.TOPIC, "t", ResourcePatternType.LITERAL, ANON, "*",
                         AclOperation.READ, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException):
        admin.create_acls([binding])[binding].result(10)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_acl_api_version_round_trips(acl_broker, version):
    from strom.protocol.messages import request_module
    name = f"v{version}-topic"
    mod = request_module(30, version)
    created = _raw(acl_broker, 30, version, creations=(make(
        mod.AclCreation, resource_type=2, resource_name=name, resource_pattern_type=3,
        principal="User:v", host="*", operation=3, permission_type=3),))
    assert [r.error_code for r in created.results] == [0]
    described = _raw(acl_broker, 29, version, resource_type_filter=2,
                     resource_name_filter=name, pattern_type_filter=1, principal_filter=None,
                     host_filter=None, operation=1, permission_type=1)
    assert described.error_code == 0
    assert [(r.resource_name, [a.principal for a in r.acls]) for r in described.resources] \
        == [(name, ["User:v"])]
    dmod = request_module(31, version)
    deleted = _raw(acl_broker, 31, version, filters=(make(
        dmod.DeleteAclsFilter, resource_type_filter=2, resource_name_filter=name,
        pattern_type_filter=1, principal_filter=None, host_filter=None, operation=1,
        permission_type=1),))
    assert [len(f.matching_acls) for f in deleted.filter_results] == [1]
