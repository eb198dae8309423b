"""A transaction coordinator paused (SIGSTOP) for longer than its ZooKeeper session, the
fault that began the chaos run of seed 1 in which InitProducerId got NOT_COORDINATOR for
90 s (docs/reliability.md): the controller moves `__transaction_state-0` to another broker,
which loads it; the paused broker, once resumed, unloads it and is not asked again; a
transactional producer started while the coordinator is paused initializes and commits
(confluent-kafka), and so does one started after it is back."""

from __future__ import annotations

import re
import threading
import time

import pytest
from confluent_kafka import KafkaException, Producer

from strom.testing.cluster import wait_until

pytestmark = pytest.mark.timeout(180)

TOPIC = "txn-paused"


def producer(cluster, transactional_id: str) -> Producer:
    return Producer({"bootstrap.servers": cluster.bootstrap,
                     "transactional.id": transactional_id, "transaction.timeout.ms": 10000,
                     "socket.timeout.ms": 5000, "message.timeout.ms": 9000})


def commit_one(p: Producer, value: bytes) -> None:
    p.begin_transaction()
    p.produce(TOPIC, value, partition=0)
    p.commit_transaction(30)


def test_a_coordinator_paused_past_its_session(make_cluster):
    cluster = make_cluster(3, overrides={
        "transaction.state.log.num.partitions": 1, "offsets.topic.num.partitions": 1,
        "replica.lag.time.max.ms": 4000})
    cluster.create_topic(TOPIC, 1, 3)
    first = producer(cluster, "before")
    first.init_transactions(60)
    commit_one(first, b"before")
    coordinator = cluster.leader_of("__transaction_state", 0)

    cluster.pause(coordinator)
    outcome: dict[str, object] = {}

    def init_while_paused() -> None:
        p = producer(cluster, "during")
        began = time.monotonic()
        try:
            p.init_transactions(90)
            commit_one(p, b"during")
            outcome["ok"] = time.monotonic() - began
        except KafkaException as e:
            outcome["error"] = e

    during = threading.Thread(target=init_while_paused, daemon=True)
    during.start()
    try:
        # the session expires: the controller moves the partition away from it
        moved = cluster.wait_for_leader("__transaction_state", 0, timeout=60,
                                        not_on=coordinator)
    finally:
        cluster.resume(coordinator)
    during.join(120)
    assert "ok" in outcome, f"the producer started during the pause: {outcome}"
    assert moved != coordinator

    # the resumed broker gave the partition up, and a producer started now works too
    wait_until(lambda: re.search(r"Unloaded \d+ transactional ids of __transaction_state-0 ",
                                 cluster.brokers[coordinator].log_text(True)),
               60, what="the paused coordinator unloading __transaction_state-0")
    after = producer(cluster, "after")
    after.init_transactions(60)
    commit_one(after, b"after")
    # the first producer's coordinator moved under it: it goes on committing
    commit_one(first, b"before-again")
    first.flush(10)
    after.flush(10)
