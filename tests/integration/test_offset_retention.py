"""offsets.retention.minutes: committed offsets of an empty group expire; an active
group's stay. Kafka's minimum retention is one minute, so this test waits about that long.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def committed(bootstrap: str, group: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        c.close()


def test_offsets_of_an_empty_group_expire(start_broker, topic_name):
    broker = start_broker({"offsets.retention.minutes": "1",
                           "offsets.retention.check.interval.ms": "1000",
                           "group.initial.rebalance.delay.ms": "0"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(15)
    # a standalone commit (no members): the group is empty from the start
    idle = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "idle"})
    idle.commit(offsets=[TopicPartition(topic_name, 0, 7)], asynchronous=False)
    idle.close()
    # an active member commits and keeps heart-beating
    active = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "active",
                       "enable.auto.commit": False})
    active.assign([TopicPartition(topic_name, 0)])
    active.commit(offsets=[TopicPartition(topic_name, 0, 5)], asynchronous=False)
    active.close()
    member = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "live",
                       "enable.auto.commit": False, "session.timeout.ms": 10000})
    member.subscribe([topic_name])
    deadline = time.monotonic() + 30
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.2)
    assert member.assignment(), "the live member never got its partition"
    member.commit(offsets=[TopicPartition(topic_name, 0, 3)], asynchronous=False)
    assert committed(broker.bootstrap, "idle", topic_name) == 7

    deadline = time.monotonic() + 150
    while committed(broker.bootstrap, "idle", topic_name) != -1001 and \
            time.monotonic() < deadline:
        member.poll(1.0)  # keep the live group alive meanwhile
    assert committed(broker.bootstrap, "idle", topic_name) == -1001  # OFFSET_INVALID
    member.poll(0.5)
    assert committed(broker.bootstrap, "live", topic_name) == 3
    assert "Expired 1 offsets of empty group idle" in broker.log_text()
    member.close()
