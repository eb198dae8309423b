"""Three brokers that talk to each other over SASL_SSL only (SCRAM-SHA-512, credentials in
ZooKeeper at /config/users, made through the AlterUserScramCredentials API after start-up),
while clients use a SASL_SSL listener too: replication fills the ISR, a kill -9 of the leader
moves leadership, and a consumer group reads every acknowledged record."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from strom.testing.certs import TestCA
from strom.testing.cluster import wait_until
from strom.testing.processes import HOST, free_port

pytestmark = pytest.mark.timeout(180)


def test_cluster_over_sasl_ssl(make_cluster, tmp_path, topic_name):
    ca = TestCA(tmp_path)
    server = ca.server()
    jaas = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
            'username="broker" password="broker-secret";')
    overrides = {
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,INTERNAL:SASL_SSL,"
                                          "CLIENT:SASL_SSL",
        "inter.broker.listener.name": "INTERNAL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        "listener.name.internal.scram-sha-512.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM", "ssl.keystore.location": str(server.pem),
        "ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca.ca_pem),
        "default.replication.factor": 3, "offsets.topic.replication.factor": 3,
    }
    cluster = make_cluster(3, overrides, start=False)
    client_ports = {}
    for node_id, broker in cluster.brokers.items():
        client_ports[node_id] = free_port()
        broker.overrides["listeners"] = (
            f"PLAINTEXT://{HOST}:{broker.port},INTERNAL://{HOST}:{free_port()},"
            f"CLIENT://{HOST}:{client_ports[node_id]}")
    cluster.start()
    plain = AdminClient({"bootstrap.servers": cluster.bootstrap})
    for user, password in (("broker", "broker-secret"), ("app", "app-secret")):
        plain.alter_user_scram_credentials([UserScramCredentialUpsertion(
            user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
            password.encode())])[user].result(timeout=30)
    client = {"bootstrap.servers": ",".join(f"{HOST}:{p}" for p in client_ports.values()),
              "security.protocol": "SASL_SSL", "ssl.ca.location": str(ca.ca_pem),
              "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "app",
              "sasl.password": "app-secret"}
    admin = AdminClient(client)
    admin.create_topics([NewTopic(topic_name, 1, 3)])[topic_name].result(timeout=30)
    cluster.wait_for_isr(topic_name, 0, {1, 2, 3}, timeout=60)  # followers fetched

    producer = Producer({**client, "acks": "all", "message.timeout.ms": 30000})
    for i in range(200):
        producer.produce(topic_name, b"%d" % i)
    assert producer.flush(60) == 0
    leader = cluster.leader_of(topic_name, 0)
    cluster.wait_for_isr(topic_name, 0, {1, 2, 3}, timeout=60)
    cluster.kill(leader)
    cluster.wait_for_leader(topic_name, 0, not_on=leader, timeout=60)

    survivors = ",".join(f"{HOST}:{p}" for n, p in client_ports.items() if n != leader)
    consumer = Consumer({**client, "bootstrap.servers": survivors,
                         "group.id": f"g-{topic_name}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic_name])
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < 200 and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
    finally:
        consumer.close()
    assert sorted(int(v) for v in got) == list(range(200))
    # the followers of the new leader catch up over SASL_SSL too
    wait_until(lambda: len(cluster.isr_of(topic_name, 0)) == 2, 60, what="ISR of 2")
