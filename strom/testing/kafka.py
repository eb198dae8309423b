"""Small client-side helpers for tests: create/delete topics and wait for them, read a
partition to a known end. All built on confluent-kafka, like any user's code; every wait is
bounded and raises `TimeoutError` with what it last saw.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = [
    "admin_client",
    "consume_partition",
    "create_topic",
    "create_topics",
    "delete_topic",
    "wait_for_topic",
    "wait_topic_gone",
]


def admin_client(bootstrap: str, **conf: object) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **conf})


def create_topics(
    bootstrap: str,
    topics: Iterable[str | tuple[str, int]],
    *,
    config: dict[str, str] | None = None,
    replication_factor: int = 1,
    timeout: float = 15.0,
) -> None:
    """Create each topic (name, or (name, partitions)) and wait until Metadata shows every
    partition with a leader. Raises the client's KafkaException when creation fails."""
    admin = admin_client(bootstrap)
    specs = []
    for t in topics:
        name, partitions = (t, 1) if isinstance(t, str) else t
        specs.append(NewTopic(name, num_partitions=partitions,
                              replication_factor=replication_factor, config=dict(config or {})))
    futures = admin.create_topics(specs, operation_timeout=timeout, request_timeout=timeout)
    for fut in futures.values():
        fut.result(timeout=timeout)
    for spec in specs:
        wait_for_topic(bootstrap, spec.topic, spec.num_partitions, timeout=timeout, admin=admin)


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    *,
    config: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> str:
    """Create one topic and wait for it; returns its name."""
    create_topics(bootstrap, [(name, partitions)], config=config, timeout=timeout)
    return name


def wait_for_topic(
    bootstrap: str,
    name: str,
    partitions: int | None = None,
    *,
    timeout: float = 15.0,
    admin: AdminClient | None = None,
) -> None:
    """Wait until Metadata lists `name` with `partitions` partitions (any count when None),
    each with a leader."""
    admin = admin or admin_client(bootstrap)
    deadline = time.monotonic() + timeout
    seen = "nothing"
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(topic=name, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
        except KafkaException as e:
            seen = repr(e)
        else:
            t = md.topics.get(name)
            if t is not None and t.error is None:
                parts = t.partitions
                ok = all(p.leader >= 0 and p.error is None for p in parts.values())
                if ok and parts and (partitions is None or len(parts) == partitions):
                    return
            seen = repr(t.error) if t is not None and t.error else f"partitions={t and t.partitions}"
        time.sleep(0.1)
    raise TimeoutError(f"topic {name!r} not ready after {timeout}s; last seen: {seen}")


def delete_topic(bootstrap: str, name: str, *, timeout: float = 15.0) -> None:
    admin = admin_client(bootstrap)
    for fut in admin.delete_topics([name], operation_timeout=timeout,
                                   request_timeout=timeout).values():
        fut.result(timeout=timeout)
    wait_topic_gone(bootstrap, name, timeout=timeout, admin=admin)


def wait_topic_gone(bootstrap: str, name: str, *, timeout: float = 15.0,
                    admin: AdminClient | None = None) -> None:
    admin = admin or admin_client(bootstrap)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=5)
        if name not in md.topics:
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name!r} still listed after {timeout}s")


def consume_partition(
    bootstrap: str,
    topic: str,
    partition: int,
    *,
    start: int = 0,
    count: int | None = None,
    end: int | None = None,
    timeout: float = 20.0,
    conf: dict[str, object] | None = None,
) -> list:
    """Read one partition with a group-less confluent-kafka consumer from offset `start`
    until `count` messages were read or offset `end` was reached (one of them is required).
    Returns the confluent_kafka Message objects in the order received."""
    if count is None and end is None:
        raise ValueError("give count or end")
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "strom-testing-unused",  # required by the client; no group API is used
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        **(conf or {}),
    })
    out: list = []
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if count is not None and len(out) >= count:
                break
            if end is not None and (start >= end or (out and out[-1].offset() + 1 >= end)):
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    continue
                raise KafkaException(msg.error())
            out.append(msg)
        else:
            raise TimeoutError(
                f"read {len(out)} messages from {topic}[{partition}] from {start} in {timeout}s "
                f"(wanted count={count} end={end})"
            )
    finally:
        consumer.close()
    return out
