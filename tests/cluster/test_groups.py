"""Consumer groups on a replicated cluster: the group coordinator is the leader of the
group's `__consumer_offsets` partition (replicated like any topic, replication factor 3
here), so when its broker dies the partition's new leader loads the committed offsets and
takes over the group.

A confluent-kafka consumer commits synchronously after every batch while the coordinator
is killed with SIGKILL: its commits go on (after retries on NOT_COORDINATOR and
COORDINATOR_NOT_AVAILABLE, as applications do), every record is read, and a second
consumer of the group afterwards starts exactly at the committed offsets.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from strom.testing.cluster import wait_until
from strom.testing.groups import (
    admin,
    commit_retrying,
    consumer_conf,
    group_offsets,
    produce,
)

pytestmark = pytest.mark.timeout(150)

RETRIABLE = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
             KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.REQUEST_TIMED_OUT,
             KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError.REBALANCE_IN_PROGRESS,
             KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID)


def coordinator_of(bootstrap: str, group: str) -> int:
    adm = admin(bootstrap)
    described = adm.describe_consumer_groups([group], request_timeout=10)[group]
    return described.result(timeout=15).coordinator.id


def test_group_survives_the_death_of_its_coordinator(make_cluster):
    cluster = make_cluster(3)
    total, parts = 600, 3
    cluster.create_topic("t", parts, 3, {"min.insync.replicas": "2"})
    produce(cluster.bootstrap, "t", total, parts)
    group = "g-coordinator-failover"
    conf = consumer_conf(cluster.bootstrap, group, **{"session.timeout.ms": 6000,
                                                      "socket.timeout.ms": 10000})
    consumer = Consumer(conf)
    consumer.subscribe(["t"])
    seen: set[tuple[int, int]] = set()
    retried: list[int] = []
    killed = None
    try:
        deadline = time.monotonic() + 90
        while len(seen) < total:
            assert time.monotonic() < deadline, f"read {len(seen)} of {total}"
            batch = [m for m in consumer.consume(50, 0.5) if m.error() is None]
            if not batch:
                continue
            seen.update((m.partition(), m.offset()) for m in batch)
            ends: dict[int, int] = {}
            for m in batch:
                ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
            err = commit_retrying(consumer, [TopicPartition("t", p, o) for p, o in ends.items()],
                                  RETRIABLE, retried, timeout=40, interval=0.2)
            assert err is None, err
            if killed is None and len(seen) >= total // 3:
                killed = coordinator_of(cluster.bootstrap, group)
                cluster.kill(killed)
                time.sleep(0.5)  # keep reading: the next commits meet the failover
    finally:
        consumer.close()
    assert killed is not None
    assert seen == {(p, o) for p in range(parts) for o in range(total // parts)}

    live = cluster.live_bootstrap()
    new = wait_until(lambda: (c := coordinator_of(live, group)) != killed and c, 30,
                     what="a new coordinator")
    assert new in cluster.brokers and cluster.brokers[new].is_alive()
    assert group_offsets(live, group) == [(p, total // parts) for p in range(parts)]

    # a new member of the group starts at the committed offsets: nothing is read again
    produce(live, "t", 30, parts, start=total)
    second = Consumer(consumer_conf(live, group))
    second.subscribe(["t"])
    again: list[tuple[int, int]] = []
    try:
        wait_until(lambda: again.extend((m.partition(), m.offset()) for m in
                                        second.consume(50, 0.2) if m.error() is None)
                   or len(again) >= 30, 40, what="the 30 new records")
    finally:
        second.close()
    assert sorted(again) == [(p, o) for p in range(parts)
                             for o in range(total // parts, (total + 30) // parts)]
