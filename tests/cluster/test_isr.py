"""The ISR follows the followers: out after replica.lag.time.max.ms, back when caught up.

A follower frozen with SIGSTOP (it keeps its sockets and, with a long ZooKeeper session
timeout, its registration: only the leader can notice it) leaves the ISR after
replica.lag.time.max.ms, which Metadata and `strom topics --describe
--under-replicated-partitions` show, and rejoins after SIGCONT once it has caught up.
With fewer in-sync replicas than min.insync.replicas, acks=all gets NOT_ENOUGH_REPLICAS
(acks=1 still works).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from confluent_kafka import KafkaError, Producer

from strom.testing import wire
from strom.testing.cluster import wait_until

pytestmark = pytest.mark.timeout(120)

TOPIC = "isr"
NOT_ENOUGH_REPLICAS = 19
# long enough that a paused broker keeps its ZooKeeper session: the leader's lag check,
# not the controller, takes it out of the ISR
OVERRIDES = {"replica.lag.time.max.ms": 2000}
SESSION_TIMEOUT_MS = 20000


def under_replicated(cluster) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "strom", "topics", "--bootstrap-server",
         cluster.live_bootstrap(), "--describe", "--under-replicated-partitions"],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def produce_one(cluster, acks: str, config: dict | None = None):
    """(error or None, offset) of one record to partition 0."""
    producer = Producer({"bootstrap.servers": cluster.live_bootstrap(), "acks": acks,
                         "enable.idempotence": False, **(config or {})})
    result = []
    producer.produce(TOPIC, b"v", partition=0,
                     on_delivery=lambda err, msg: result.append((err, msg.offset())))
    assert producer.flush(30) == 0
    return result[0]


def create_led_by_controller(cluster) -> int:
    """The topic, led by the controller: the tests pause followers only, and clients
    (the CLI's admin requests) never wait for a frozen controller."""
    controller = cluster.controller_id()
    others = [b for b in cluster.brokers if b != controller]
    cluster.create_topic(TOPIC, 1, 3, {"min.insync.replicas": "2"},
                         assignment=[[controller, *others]])
    assert cluster.leader_of(TOPIC, 0) == controller
    return controller


def test_paused_follower_leaves_and_rejoins_the_isr(make_cluster):
    cluster = make_cluster(3, OVERRIDES, session_timeout_ms=SESSION_TIMEOUT_MS)
    leader = create_led_by_controller(cluster)
    follower, other = [b for b in cluster.partition(TOPIC, 0).replicas if b != leader]
    assert under_replicated(cluster) == ""

    cluster.pause(follower)
    try:
        # acks=all waits for the frozen follower only until the leader drops it
        err, offset = produce_one(cluster, "all")
        assert err is None and offset == 0
        cluster.wait_for_isr(TOPIC, 0, {leader, other}, timeout=30)
        assert cluster.leader_of(TOPIC, 0) == leader
        listed = under_replicated(cluster)
        lines = [line.split("\t") for line in listed.splitlines()]
        assert [f for f in lines[0] if f] == [
            f"Topic: {TOPIC}", "Partition: 0", f"Leader: {leader}",
            f"Replicas: {','.join(map(str, cluster.partition(TOPIC, 0).replicas))}",
            f"Isr: {','.join(map(str, cluster.isr_of(TOPIC, 0)))}"], listed
        assert len(lines) == 1, listed
        # the controller did not step in: the frozen broker is still registered
        assert follower in cluster.registered_brokers()
    finally:
        cluster.resume(follower)
    cluster.wait_for_isr(TOPIC, 0, {leader, follower, other}, timeout=30)
    wait_until(lambda: under_replicated(cluster) == "", 30, what="no under-replicated "
               "partitions listed")
    err, offset = produce_one(cluster, "all")
    assert err is None and offset == 1


def test_acks_all_below_min_insync_replicas_is_refused(make_cluster):
    cluster = make_cluster(3, OVERRIDES, session_timeout_ms=SESSION_TIMEOUT_MS)
    leader = create_led_by_controller(cluster)
    followers = [b for b in cluster.partition(TOPIC, 0).replicas if b != leader]

    for b in followers:
        cluster.pause(b)
    try:
        cluster.wait_for_isr(TOPIC, 0, {leader}, timeout=30)
        with wire.KafkaSocket("127.0.0.1", cluster.brokers[leader].port) as sock:
            batch = wire.encode_record_batch([wire.Record(b"refused")])
            _, results = wire.parse_produce(sock.roundtrip(
                wire.produce(TOPIC, 0, batch, acks=-1)))
            assert results[0].error_code == NOT_ENOUGH_REPLICAS
            assert "min.isr" in (results[0].error_message or "")
            _, results = wire.parse_produce(sock.roundtrip(
                wire.produce(TOPIC, 0, batch, acks=1, correlation_id=2)))
            assert results[0].error_code == 0 and results[0].base_offset == 0
        # a real client sees the same error in its delivery report (no retries)
        err, _ = produce_one(cluster, "all", {"retries": 0, "message.timeout.ms": 10000})
        assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, err
        err, offset = produce_one(cluster, "1")
        assert err is None and offset == 1
    finally:
        for b in followers:
            cluster.resume(b)
    cluster.wait_for_isr(TOPIC, 0, set(cluster.brokers), timeout=30)
    err, offset = produce_one(cluster, "all")
    assert err is None and offset == 2
