"""Helpers for consumer-group tests with confluent-kafka (librdkafka) clients: consumer
configs, producing numbered records, polling consumers until a condition holds, describing
groups with the AdminClient, and a consumer in its own process. Every wait is bounded and
raises `AssertionError` with what it last saw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

__all__ = [
    "CHILD_CONSUMER",
    "ChildConsumer",
    "admin",
    "assigned",
    "close_all",
    "commit_retrying",
    "consumer_conf",
    "describe",
    "group_offsets",
    "parts",
    "poll_for",
    "poll_until",
    "process_across_rebalances",
    "produce",
    "wait_described",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]


def consumer_conf(bootstrap: str, group: str, **extra) -> dict:
    """A consumer config that reads from the earliest offset, commits only when told and
    refreshes metadata every second; `extra` adds to or overrides it."""
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "topic.metadata.refresh.interval.ms": 1000,
    }
    conf.update(extra)
    return conf


def produce(bootstrap: str, topic: str, count: int, partitions: int, *, start: int = 0,
            keyed: bool = False) -> None:
    """`count` records "v<i>" (with key "k<i>" if `keyed`), record i going to partition
    i % partitions."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    errors = []

    def done(err, _msg):
        if err is not None:
            errors.append(err)

    for i in range(start, start + count):
        key = {"key": f"k{i}".encode()} if keyed else {}
        p.produce(topic, value=f"v{i}".encode(), partition=i % partitions, on_delivery=done,
                  **key)
        p.poll(0)
    assert p.flush(30) == 0, "produce did not finish"
    assert not errors, errors


def parts(consumer: Consumer) -> set[int]:
    return {tp.partition for tp in consumer.assignment()}


def poll_until(consumers, cond, *, timeout: float = 30.0, what: str = "", sink=None) -> None:
    """Poll every consumer in turn (messages go to `sink(consumer, msg)` or are dropped)
    until `cond()` holds; bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in consumers:
            msg = c.poll(0.02)
            if msg is not None and sink is not None:
                sink(c, msg)
        if cond():
            return
    raise AssertionError(f"not reached within {timeout}s: {what}; assignments: "
                         f"{[sorted(parts(c)) for c in consumers]}")


def poll_for(consumers, seconds: float, sink=None) -> None:
    """Poll every consumer in turn for `seconds` (or just sleep when there are none)."""
    end = time.monotonic() + seconds
    while consumers and time.monotonic() < end:
        for c in consumers:
            msg = c.poll(0.02)
            if msg is not None and sink is not None:
                sink(c, msg)
    if not consumers:
        time.sleep(seconds)


def close_all(consumers) -> None:
    for c in consumers:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - already closed, or the test failed earlier
            pass


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def describe(adm: AdminClient, group: str):
    return adm.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


def wait_described(adm: AdminClient, group: str, cond, *, timeout: float = 20.0, what="",
                   consumers=(), sink=None):
    """Describe the group until `cond(description)`, polling `consumers` meanwhile (a
    librdkafka member reconciles only when the application polls), else sleeping 0.2 s."""
    deadline = time.monotonic() + timeout
    d = None
    while time.monotonic() < deadline:
        d = describe(adm, group)
        if cond(d):
            return d
        poll_for(consumers, 0.2, sink)
    last = d and (d.type, d.state, [(m.member_id, m.group_instance_id, m.assignment)
                                    for m in d.members])
    raise AssertionError(f"group {group} not {what} within {timeout}s; last: {last}")


def assigned(d) -> dict[str, set[int]]:
    """member id -> partitions, from a group description."""
    return {m.member_id: {tp.partition for tp in m.assignment.topic_partitions}
            for m in d.members}


def group_offsets(bootstrap: str, group: str) -> list[tuple[int, int]]:
    """(partition, offset) of every committed offset, via the AdminClient."""
    adm = admin(bootstrap)  # keep a reference: a collected client never completes its futures
    res = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                          request_timeout=15)[group].result(timeout=20)
    return sorted((tp.partition, tp.offset) for tp in res.topic_partitions)


# A consumer in its own process, printing its member id and assignment whenever they change;
# it exits on its own after 120 s (every loop is bounded) and is normally killed by the test.
CHILD_CONSUMER = r"""
import json, sys, time
from confluent_kafka import Consumer
conf, topic = json.loads(sys.argv[1]), sys.argv[2]
c = Consumer(conf)
c.subscribe([topic])
last = None
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    c.poll(0.05)
    now = [c.memberid(), sorted(tp.partition for tp in c.assignment())]
    if now != last:
        print("ASSIGNED " + json.dumps(now), flush=True)
        last = now
c.close()
"""


class ChildConsumer:
    """`python -c CHILD_CONSUMER`, started by the test and stopped by its PID only."""

    def __init__(self, conf: dict, topic: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_REPO_ROOT), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD_CONSUMER, json.dumps(conf), topic],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            env=env, text=True)
        self.seen: list[tuple[str | None, list[int]]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("ASSIGNED "):
                member_id, ps = json.loads(line[len("ASSIGNED "):])
                with self._lock:
                    self.seen.append((member_id, ps))

    @property
    def current(self) -> set[int]:
        with self._lock:
            return set(self.seen[-1][1]) if self.seen else set()

    @property
    def member_id(self) -> str | None:
        with self._lock:
            return self.seen[-1][0] if self.seen else None

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill9()


def commit_retrying(consumer: Consumer, offsets: list[TopicPartition],
                    retryable: tuple[int, ...], retried: list[int], timeout: float = 20.0,
                    interval: float = 0.05) -> str | None:
    """A synchronous commit, retried (bounded by `timeout`) while it fails with an error
    code in `retryable`, as applications do; each retried code is appended to `retried`.
    Returns None, or a description of the error it gave up on."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            return None
        except KafkaException as e:
            code = e.args[0].code()
            if code not in retryable or time.monotonic() > deadline:
                return f"commit failed: {e}"
            retried.append(code)
            time.sleep(interval)


class RebalanceRun:
    """What `process_across_rebalances` saw: every processed (member, partition, offset),
    the commit failures, and the error codes of commits that were retried."""

    def __init__(self) -> None:
        self.processed: list[tuple[str, int, int]] = []
        self.failures: list[str] = []
        self.retries: list[int] = []
        # (seconds since start, member, what): assignments, revocations, commits
        self.events: list[tuple[float, str, str]] = []
        self._t0 = time.monotonic()

    def event(self, name: str, what: str) -> None:
        self.events.append((time.monotonic() - self._t0, name, what))

    def count(self, name: str | None = None) -> int:
        return sum(1 for n, _, _ in list(self.processed) if name is None or n == name)

    def twice(self) -> dict[tuple[int, int], list[str]]:
        """(partition, offset) -> the members that processed it, for every record processed
        more than once."""
        by: dict[tuple[int, int], list[str]] = {}
        for name, p, o in self.processed:
            by.setdefault((p, o), []).append(name)
        return {k: names for k, names in sorted(by.items()) if len(names) > 1}

    def events_text(self) -> str:
        return "\n".join(f"{t:8.3f} {name} {what}" for t, name, what in self.events)


def process_across_rebalances(bootstrap: str, topic: str, group: str,
                              conf: Callable[[str], dict], *,
                              retryable: tuple[int, ...], partitions: int = 6,
                              total: int = 1800) -> RebalanceRun:
    """Three members (A, B, C) of `group` with the consumer configs `conf(name)` process
    `total` records of `topic` (created by the caller with `partitions` partitions, empty),
    each committing synchronously after every processed batch; C joins while A and B work, then
    A leaves (close()). A commit failing with an error code in `retryable` is retried,
    bounded, before the member polls again, as applications do.

    The records are produced in three thirds so that each rebalance has work to share:
    the first at the start, the second once C holds partitions, the last just before A
    leaves. (All at once, A and B could finish before C's first assignment.)

    Offset 0 is committed for every partition before the members start (`group` being
    the `group.id` of `conf`), so that each partition starts at a committed offset. Left
    to auto.offset.reset, librdkafka 2.16 can rewind a partition: when a reconciliation
    pauses and resumes it while its ListOffsets is in flight, the outdated reply restarts
    an offset-query timer that is not stopped by the next, current reply, and it fires once
    the partition is active ("timed offset query for offset BEGINNING in state active" in
    its debug log), sending the member back to offset 0 after it committed more."""
    third = total // 3
    run = RebalanceRun()
    lock = threading.Lock()
    holding: dict[str, set[int]] = {name: set() for name in ("A", "B", "C")}
    stops = {name: threading.Event() for name in ("A", "B", "C")}

    def member(name: str) -> None:
        c = Consumer(conf(name))

        def on_assign(_c, tps):
            with lock:
                holding[name].update(tp.partition for tp in tps)
                run.event(name, f"assigned {sorted(tp.partition for tp in tps)}")

        def on_revoke(_c, tps):
            with lock:
                holding[name].difference_update(tp.partition for tp in tps)
                run.event(name, f"revoked {sorted(tp.partition for tp in tps)}")

        c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        deadline = time.monotonic() + 120
        try:
            while not stops[name].is_set() and time.monotonic() < deadline:
                batch = [m for m in c.consume(num_messages=20, timeout=0.2)
                         if m.error() is None]
                if not batch:
                    continue
                with lock:
                    run.processed.extend((name, m.partition(), m.offset()) for m in batch)
                    spans: dict[int, list[int]] = {}
                    for m in batch:
                        spans.setdefault(m.partition(), []).append(m.offset())
                    run.event(name, "processed " + " ".join(
                        f"{p}:{min(o)}-{max(o)}" for p, o in sorted(spans.items())))
                time.sleep(0.05)  # "processing"
                nxt: dict[int, int] = {}
                for m in batch:
                    nxt[m.partition()] = max(nxt.get(m.partition(), 0), m.offset() + 1)
                err = commit_retrying(c, [TopicPartition(topic, p, o) for p, o in nxt.items()],
                                      retryable, run.retries)
                with lock:
                    run.event(name, f"committed {sorted(nxt.items())} {err or 'ok'}")
                if err:
                    run.failures.append(f"{name}: {err}")
        finally:
            c.close()

    def wait(cond, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                if cond():
                    return
            time.sleep(0.05)
        raise AssertionError(f"{what} not reached; processed {run.count()}")

    threads = {name: threading.Thread(target=member, args=(name,), daemon=True)
               for name in stops}
    produce(bootstrap, topic, third, partitions)
    adm = admin(bootstrap)
    adm.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p, 0) for p in range(partitions)])],
        request_timeout=15)[group].result(timeout=20)
    try:
        threads["A"].start()
        threads["B"].start()
        wait(lambda: run.count("A") > 0 and run.count("B") > 0, "A and B processing")
        threads["C"].start()  # rebalance 1: a member joins
        wait(lambda: bool(holding["C"]), "C holding partitions")
        produce(bootstrap, topic, third, partitions, start=third)
        wait(lambda: run.count("C") > 0, "C processing")
        produce(bootstrap, topic, total - 2 * third, partitions, start=2 * third)
        stops["A"].set()  # rebalance 2: a member leaves
        threads["A"].join(timeout=30)
        wait(lambda: len({(p, o) for _, p, o in run.processed}) >= total, "every record", 90)
    finally:
        for event in stops.values():
            event.set()
        for t in threads.values():
            if t.ident is not None:
                t.join(timeout=30)
    return run
