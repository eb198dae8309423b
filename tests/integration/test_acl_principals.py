"""ACLs by principal: a broker with a SASL_PLAINTEXT (PLAIN) listener, the authorizer on,
`super.users=User:admin` (and User:ANONYMOUS: the PLAINTEXT listener is the operator's). alice is refused until admin grants her ACLs (prefixed and
literal), a DENY for her beats an ALLOW for User:*, the super user passes everything,
Metadata hides from alice what only admin may see, alice may not manage ACLs, and a
quota on user alice throttles alice only. Clients: confluent-kafka, kafka-python, aiokafka,
kcat, all over SASL PLAIN.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from strom.testing.broker import BrokerProcess
from strom.testing.processes import HOST, free_port
from strom.testing.security import PLAIN_USERS, plain_jaas

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def broker_and_sasl():
    sasl_port = free_port()
    b = BrokerProcess(overrides={
        "listeners": f"PLAINTEXT://{HOST}:{{port}},SASL_PLAINTEXT://{HOST}:{sasl_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain_jaas(PLAIN_USERS),
        "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
        "super.users": "User:admin;User:ANONYMOUS", "num.partitions": 1, "offsets.topic.num.partitions": 1,
        "group.initial.rebalance.delay.ms": 0})
    b.overrides["listeners"] = b.overrides["listeners"].replace("{port}", str(b.port))
    b.start()
    bootstrap = f"{HOST}:{sasl_port}"
    admin = AdminClient(conf(bootstrap, "admin"))
    for f in admin.create_topics([NewTopic(t, 1) for t in
                                  ("pre-a", "lit", "hidden", "denied")]).values():
        f.result(30)
    yield b, bootstrap
    b.stop()


@pytest.fixture(scope="module")
def sasl(broker_and_sasl):
    return broker_and_sasl[1]


@pytest.fixture(scope="module")
def plaintext_bootstrap(broker_and_sasl):
    return broker_and_sasl[0].bootstrap


def conf(bootstrap: str, user: str, **extra) -> dict:
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": user,
            "sasl.password": PLAIN_USERS[user], **extra}


def grant(bootstrap: str, *bindings: AclBinding) -> None:
    admin = AdminClient(conf(bootstrap, "admin"))
    for f in admin.create_acls(list(bindings)).values():
        f.result(10)  # in force on this broker once answered


def acl(rtype, name, principal, op, pattern=ResourcePatternType.LITERAL,
        permission=AclPermissionType.ALLOW) -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, "*", op, permission)


def produce_error(bootstrap: str, user: str, topic: str):
    errors: list = []
    p = Producer(conf(bootstrap, user, **{"message.timeout.ms": 10000}))
    p.produce(topic, b"v", on_delivery=lambda err, msg: errors.append(err))
    p.flush(20)
    assert errors, "no delivery report"
    return errors[0]


def consume_error(bootstrap: str, user: str, topic: str, group: str):
    c = Consumer(conf(bootstrap, user, **{"group.id": group, "auto.offset.reset": "earliest",
                                          "session.timeout.ms": 6000}))
    c.subscribe([topic])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                return m.error().code() if m.error() else None
        raise AssertionError("neither a record nor an error")
    finally:
        c.close()


def test_refused_then_allowed_by_prefixed_and_literal_acls(sasl):
    assert produce_error(sasl, "alice", "pre-a").code() == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_error(sasl, "admin", "pre-a") is None  # super user
    grant(sasl, acl(ResourceType.TOPIC, "pre-", "User:alice", AclOperation.WRITE,
                    ResourcePatternType.PREFIXED))
    assert produce_error(sasl, "alice", "pre-a") is None
    assert consume_error(sasl, "alice", "pre-a", "alice-g") == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    grant(sasl, acl(ResourceType.GROUP, "alice-g", "User:alice", AclOperation.READ))
    assert consume_error(sasl, "alice", "pre-a", "alice-g") == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED  # Write does not give Read
    grant(sasl, acl(ResourceType.TOPIC, "pre-a", "User:alice", AclOperation.READ))
    assert consume_error(sasl, "alice", "pre-a", "alice-g") is None


def test_deny_beats_allow_and_metadata_hides(sasl):
    grant(sasl, acl(ResourceType.TOPIC, "denied", "User:*", AclOperation.ALL),
          acl(ResourceType.TOPIC, "denied", "User:alice", AclOperation.WRITE,
              permission=AclPermissionType.DENY),
          acl(ResourceType.TOPIC, "lit", "User:alice", AclOperation.DESCRIBE))
    assert produce_error(sasl, "alice", "denied").code() == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_error(sasl, "admin", "denied") is None
    seen = AdminClient(conf(sasl, "alice")).list_topics(timeout=10).topics
    assert "hidden" not in seen and "lit" in seen and "denied" in seen
    assert "hidden" in AdminClient(conf(sasl, "admin")).list_topics(timeout=10).topics


def test_alice_may_not_manage_acls(sasl):
    admin = AdminClient(conf(sasl, "alice"))
    binding = acl(ResourceType.TOPIC, "x", "User:alice", AclOperation.ALL)
    with pytest.raises(KafkaException) as e:
        admin.create_acls([binding])[binding].result(10)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED


def test_kafka_python_and_aiokafka_by_principal(sasl):
    from kafka import KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError

    settings = dict(bootstrap_servers=sasl, security_protocol="SASL_PLAINTEXT",
                    sasl_mechanism="PLAIN", sasl_plain_username="alice",
                    sasl_plain_password=PLAIN_USERS["alice"])
    producer = KafkaProducer(max_block_ms=10000, retries=0, **settings)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send("hidden", b"v").get(timeout=20)
    finally:
        producer.close(5)

    async def aio():
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import TopicAuthorizationFailedError as Denied
        p = AIOKafkaProducer(request_timeout_ms=10000, **settings)
        await p.start()
        try:
            with pytest.raises(Denied):
                await p.send_and_wait("hidden", b"v")
        finally:
            await p.stop()
    asyncio.run(aio())


@pytest.mark.skipif(not shutil.which("kcat"), reason="kcat is not installed")
def test_kcat_by_principal(sasl):
    def listing(user):
        return subprocess.run(
            ["kcat", "-b", sasl, "-L", "-J", "-X", "security.protocol=SASL_PLAINTEXT",
             "-X", "sasl.mechanism=PLAIN", "-X", f"sasl.username={user}",
             "-X", f"sasl.password={PLAIN_USERS[user]}"],
            capture_output=True, text=True, timeout=30, check=True).stdout
    assert '"hidden"' not in listing("alice")
    assert '"hidden"' in listing("admin")



def test_user_quota_throttles_that_user_only(sasl, plaintext_bootstrap):
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
    # strom configs over the PLAINTEXT listener (User:ANONYMOUS, a super user here, as a
    # broker's own PLAINTEXT listener is in Kafka setups)
    r = subprocess.run([sys.executable, "-m", "strom", "configs", "--bootstrap-server",
                        plaintext_bootstrap, "--alter", "--entity-type", "users",
                        "--entity-name", "alice", "--add-config", "producer_byte_rate=20000"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    grant(sasl, acl(ResourceType.TOPIC, "pre-", "User:alice", AclOperation.WRITE,
                    ResourcePatternType.PREFIXED))

    def max_throttle(user: str) -> float:
        events: list = []
        p = Producer(conf(sasl, user, **{"linger.ms": 5, "batch.size": 50_000,
                                         "throttle_cb": lambda e: events.append(
                                             e.throttle_time)}))
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            try:
                p.produce("pre-a", b"x" * 10_000)
            except BufferError:
                p.poll(0.05)
            p.poll(0)
        p.purge()
        p.flush(10)
        return max(events, default=0)

    assert max_throttle("alice") > 0
    assert max_throttle("admin") == 0


def test_transactional_producer_needs_write_on_its_transactional_id(sasl):
    """InitProducerId and FindCoordinator check the transactional id as Kafka does: refused
    (TRANSACTIONAL_ID_AUTHORIZATION_FAILED) until admin grants WRITE on it; then alice's
    transaction commits and a read_committed consumer sees its record."""
    admin = AdminClient(conf(sasl, "admin"))
    for f in admin.create_topics([NewTopic("txn-out", 1)]).values():
        f.result(30)
    grant(sasl, *(AclBinding(ResourceType.TOPIC, "txn-out", ResourcePatternType.LITERAL,
                             "User:alice", "*", op, AclPermissionType.ALLOW)
                  for op in (AclOperation.WRITE, AclOperation.DESCRIBE)))
    refused = Producer(conf(sasl, "alice", **{"transactional.id": "alice-txn"}))
    with pytest.raises(KafkaException) as e:
        refused.init_transactions(20)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    grant(sasl, AclBinding(ResourceType.TRANSACTIONAL_ID, "alice-txn",
                           ResourcePatternType.LITERAL, "User:alice", "*",
                           AclOperation.WRITE, AclPermissionType.ALLOW))
    p = Producer(conf(sasl, "alice", **{"transactional.id": "alice-txn"}))
    p.init_transactions(30)
    p.begin_transaction()
    p.produce("txn-out", b"committed")
    p.commit_transaction(30)
    c = Consumer(conf(sasl, "admin", **{"group.id": "txn-reader", "auto.offset.reset":
                                        "earliest", "isolation.level": "read_committed"}))
    c.subscribe(["txn-out"])
    got, deadline = [], time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    assert got == [b"committed"]
