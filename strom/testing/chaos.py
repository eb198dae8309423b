"""The checker of the chaos suite, and its consumer-group workload.

A run writes with `BackgroundProducer` (strom.testing.cluster: idempotent acks=all,
record `seq` to partition seq % partitions with value b"<seq>"), consumes with a
`GroupConsumer`, injects faults (strom.testing.nemesis), heals, and then `check()`s:

- lost        an acknowledged record is not readable at the offset its acknowledgement named
- duplicated  one record (its seq) is readable at two offsets
- unsent      a readable record was never sent (a seq the producer did not hand out)
- reordered   a partition holds a record before one sent earlier (idempotence keeps order)
- divergent   two replicas hold different bytes below the high watermark (segment files
              compared byte for byte; a replica still behind is waited for, bounded)
- consumer    a group consumer saw offsets go backwards within one assignment, or the
              group's committed offset of a partition is below one it was told was committed

`Verdict.summary()` is the one line bench/chaos.py prints:
`faults=F acknowledged=A lost=L duplicated=D divergent=V`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from strom.testing.chaos_txn import TxnPipeline, check_pipeline
from strom.testing.cluster import BackgroundProducer, Cluster, read_partitions, wait_until
from strom.testing.nemesis import ChaosCluster, Fault

__all__ = ["GroupConsumer", "Verdict", "check", "run_schedule", "settle"]


@dataclass(frozen=True)
class Verdict:
    faults: int
    acknowledged: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unsent: list[str] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)
    divergent: list[str] = field(default_factory=list)
    consumer: list[str] = field(default_factory=list)
    transactions: int | None = None  # committed by the transactional workload, if it ran
    transactional: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unsent or self.reordered
                    or self.divergent or self.consumer or self.transactional)

    def summary(self) -> str:
        line = (f"faults={self.faults} acknowledged={self.acknowledged} lost={len(self.lost)} "
                f"duplicated={len(self.duplicated)} divergent={len(self.divergent)}")
        if self.transactions is not None:
            line += f" transactions={self.transactions} txn_errors={len(self.transactional)}"
        return line

    def details(self, limit: int = 10) -> str:
        lines = [self.summary()]
        for name in ("lost", "duplicated", "unsent", "reordered", "divergent", "consumer",
                     "transactional"):
            items = getattr(self, name)
            if items:
                lines.append(f"{name} ({len(items)}): {items[:limit]}")
        return "\n".join(lines)


class GroupConsumer:
    """One confluent-kafka consumer in a group, from a thread: it reads the topic, commits
    synchronously after each batch it consumed, and remembers what it saw. Per assignment
    (a new one starts at every rebalance) the offsets it receives of each partition must
    rise; every commit the broker acknowledged is kept so `check()` can compare it with what
    the group holds at the end."""

    def __init__(self, bootstrap: str, topic: str, group: str | None = None) -> None:
        self.settings = {"bootstrap.servers": bootstrap,
                         "group.id": group or f"chaos-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 10000, "socket.timeout.ms": 10000,
                         "log_level": 2}  # connection refusals while brokers are down
        self.topic = topic
        self.consumed = 0
        self.assignments = 0
        self.backwards: list[str] = []
        self.committed: dict[int, int] = {}  # partition -> highest acknowledged commit
        self.reached: dict[int, int] = {}  # partition -> highest offset received
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def _on_assign(self, consumer, partitions) -> None:
        self.assignments += 1
        self._last.clear()

    def _run(self) -> None:
        from confluent_kafka import Consumer, KafkaException

        consumer = Consumer(self.settings)
        try:
            consumer.subscribe([self.topic], on_assign=self._on_assign)
            while not self._stop.is_set():
                msgs = [m for m in consumer.consume(500, 0.5) if not m.error()]
                if not msgs:
                    continue
                for m in msgs:
                    p, o = m.partition(), m.offset()
                    if p in self._last and o <= self._last[p]:
                        self.backwards.append(f"p{p}: {o} after {self._last[p]} "
                                              f"(assignment {self.assignments})")
                    self._last[p] = o
                    self.reached[p] = max(self.reached.get(p, -1), o)
                    self.consumed += 1
                try:
                    done = consumer.commit(asynchronous=False)
                except KafkaException:
                    continue  # a commit during a fault may fail: it then promised nothing
                for tp in done or ():
                    if tp.error is None and tp.offset >= 0:
                        self.committed[tp.partition] = max(self.committed.get(tp.partition, -1),
                                                           tp.offset)
        except BaseException as e:  # noqa: BLE001 - reported by check()
            self.failure = e
        finally:
            consumer.close()

    def start(self) -> GroupConsumer:
        self._thread = threading.Thread(target=self._run, name="chaos-consumer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    def group_offsets(self, bootstrap: str) -> dict[int, int]:
        """The group's committed offsets as the broker answers OffsetFetch now."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({**self.settings, "bootstrap.servers": bootstrap})
        try:
            tps = c.committed([TopicPartition(self.topic, p) for p in self.committed],
                              timeout=30)
        finally:
            c.close()
        return {tp.partition: tp.offset for tp in tps}


def check(cluster: Cluster, producer: BackgroundProducer, faults: int,
          consumer: GroupConsumer | None = None, replica_timeout: float = 60) -> Verdict:
    """Read every partition back up to its high watermark and compare with what the
    producer was told; see the module docstring for what is counted."""
    topic, partitions = producer.topic, producer.partitions
    ends = {p: cluster.high_watermark(topic, p) for p in range(partitions)}
    records = read_partitions(cluster.live_bootstrap(), topic, ends, timeout=120)
    lost: list[str] = []
    duplicated: list[str] = []
    unsent: list[str] = []
    reordered: list[str] = []
    at: dict[int, dict[int, int]] = {p: {} for p in range(partitions)}
    where: dict[int, tuple[int, int]] = {}
    for p in range(partitions):
        previous = -1
        for offset, _key, value in records[p]:
            try:
                seq = int(value or b"")
            except ValueError:
                unsent.append(f"p{p}@{offset}: {value!r}")
                continue
            if seq >= producer.sent or seq % partitions != p:
                unsent.append(f"p{p}@{offset}: seq {seq}")
            if seq in where:
                duplicated.append(f"seq {seq} at p{where[seq][0]}@{where[seq][1]} and "
                                  f"p{p}@{offset}")
            where[seq] = (p, offset)
            if seq <= previous:
                reordered.append(f"p{p}@{offset}: seq {seq} after {previous}")
            previous = max(previous, seq)
            at[p][offset] = seq
    for p, offset, seq in producer.acked:
        if offset is None:
            # acknowledged without an offset (librdkafka's answer to a retried idempotent
            # batch the broker found a duplicate of): it must be somewhere in p
            if where.get(seq, (-1,))[0] != p:
                lost.append(f"seq {seq} acknowledged (no offset) in p{p}, not found")
        elif at[p].get(offset) != seq:
            lost.append(f"seq {seq} acknowledged at p{p}@{offset}, read "
                        f"{at[p].get(offset)}")
    divergent = _divergent_replicas(cluster, topic, ends, replica_timeout)
    consumer_problems: list[str] = []
    if consumer is not None:
        consumer_problems += consumer.backwards
        if consumer.failure is not None:
            consumer_problems.append(f"consumer failed: {consumer.failure!r}")
        held = consumer.group_offsets(cluster.live_bootstrap())
        for p, promised in consumer.committed.items():
            if held.get(p, -1) < promised:
                consumer_problems.append(f"p{p}: group holds {held.get(p)} after commit "
                                         f"{promised} was acknowledged")
    return Verdict(faults, len(producer.acked), lost, duplicated, unsent, reordered,
                   divergent, consumer_problems)


def _divergent_replicas(cluster: Cluster, topic: str, ends: dict[int, int], timeout: float
                        ) -> list[str]:
    """Partitions whose replicas differ below the high watermark. A replica that has not
    fetched up to it yet is waited for (`timeout`), then reported as behind."""
    deadline = time.monotonic() + timeout
    replicas = {p: _replicas(cluster, topic, p) for p in ends}
    while True:
        problems: list[str] = []
        for p, end in ends.items():
            copies = {}
            for b in replicas[p]:
                try:
                    copies[b] = cluster.log_bytes(b, topic, p, end)
                except (OSError, ValueError) as e:
                    problems.append(f"p{p} broker {b}: {e}")
            for b, (_, reached) in copies.items():
                if reached != end:
                    problems.append(f"p{p} broker {b}: holds up to {reached}, high "
                                    f"watermark {end}")
            if len({data for data, _ in copies.values()}) > 1:
                problems.append(f"p{p}: replicas differ below {end}")
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.5)


def settle(cluster: Cluster, topic: str, partitions: int, timeout: float = 90) -> None:
    """Wait until every broker is registered and every partition of `topic` has a leader
    and all its replicas in sync: the cluster healed."""
    cluster.wait_for_brokers(set(cluster.brokers), timeout=timeout)
    for p in range(partitions):
        cluster.wait_for_isr(topic, p, _replicas(cluster, topic, p), timeout=timeout)


def _replicas(cluster: Cluster, topic: str, partition: int) -> set[int]:
    """The brokers assigned a replica of the partition (with more brokers than the
    replication factor, not every broker)."""
    return set(wait_until(lambda: cluster.partition(topic, partition).replicas, 30,
                          what=f"the replicas of {topic}-{partition}"))


def run_schedule(chaos: ChaosCluster, faults: list[Fault], seed: int,
                 history: Path | None = None, topic: str = "chaos", partitions: int = 3,
                 progress: int = 100, say: Callable[[str], None] = print,
                 until: float | None = None, transactions: bool = True) -> Verdict:
    """The whole run: an RF=3, min.insync.replicas=2 topic, an idempotent acks=all
    producer and a committing group consumer running throughout; each fault is injected,
    held for its seconds, healed, and the cluster must settle and the producer make
    `progress` more acknowledged records before the next. Then `check()`. Every step goes
    to `history` (one line each, with the seed first) and through `say`. With `until` (a
    time.monotonic() deadline) no fault is injected after it. With `transactions` a
    `TxnPipeline` (strom.testing.chaos_txn) transforms `<topic>-in`, written by a second,
    slower producer, into `<topic>-out` throughout, and is checked too."""
    began = time.monotonic()
    lines: list[str] = []

    def note(text: str) -> None:
        line = f"{time.monotonic() - began:8.1f}s {text}"
        lines.append(line)
        say(line)
        if history is not None:
            history.write_text("\n".join(lines) + "\n")

    note(f"seed={seed} schedule={[str(f) for f in faults]}")
    cluster = chaos.cluster
    cluster.create_topic(topic, partitions, 3, {"min.insync.replicas": "2"})
    producer = BackgroundProducer(cluster.bootstrap, topic, partitions, records_per_tick=10,
                                  max_in_flight=2000)
    consumer = GroupConsumer(cluster.bootstrap, topic)
    injected = 0
    pipeline: TxnPipeline | None = None
    source: BackgroundProducer | None = None
    consumer.start()
    try:
        with ExitStack() as running:
            running.enter_context(producer)
            if transactions:
                for name in (f"{topic}-in", f"{topic}-out"):
                    cluster.create_topic(name, partitions, 3, {"min.insync.replicas": "2"})
                source = running.enter_context(BackgroundProducer(
                    cluster.bootstrap, f"{topic}-in", partitions, records_per_tick=2,
                    max_in_flight=500))
                pipeline = TxnPipeline(cluster.bootstrap, f"{topic}-in", f"{topic}-out",
                                       partitions, seed).start()
            producer.wait_for_acks(progress, timeout=60)
            for fault in faults:
                if until is not None and time.monotonic() >= until:
                    break
                if not chaos.nemesis.supports(fault.kind):
                    note(f"skip {fault}: not possible on this machine")
                    continue
                note(f"inject {fault} (acknowledged so far {len(producer.acked)})")
                chaos.nemesis.inject(fault)
                injected += 1
                time.sleep(fault.seconds)
                note(f"before heal: {_leaders(cluster, topic, partitions)}")
                chaos.nemesis.heal()
                note(f"heal {fault}")
                settle(cluster, topic, partitions)
                producer.wait_for_acks(progress, timeout=120)
                note(f"settled; acknowledged {len(producer.acked)}, delivery errors "
                     f"{len(producer.errors)}"
                     + (f"; transactions committed {pipeline.committed_count()} of "
                        f"{len(pipeline.outcomes)}" if pipeline else ""))
            if source is not None:
                source.stop()
        # the consumer catches up before the check reads the group's offsets
        ends = {p: cluster.high_watermark(topic, p) for p in range(partitions)}
        try:
            wait_until(lambda: all(consumer.reached.get(p, -1) + 1 >= end
                                   for p, end in ends.items()), 90, interval=0.5,
                       what=f"the consumer reading up to {ends}")
        except TimeoutError:
            note(f"the consumer read only up to {consumer.reached} of {ends}")
            raise
    except BaseException:
        if pipeline is not None:
            pipeline.stop()
        raise
    finally:
        consumer.stop()
        chaos.nemesis.heal()
    note(f"producer stopped: sent {producer.sent}, acknowledged {len(producer.acked)}, "
         f"failed {len(producer.errors)}; consumer read {consumer.consumed} in "
         f"{consumer.assignments} assignments")
    verdict = check(cluster, producer, injected, consumer)
    if pipeline is not None and source is not None:
        verdict = _check_transactions(cluster, verdict, pipeline, source, note)
    note(verdict.details())
    return verdict


def _check_transactions(cluster: Cluster, verdict: Verdict, pipeline: TxnPipeline,
                        source: BackgroundProducer, note: Callable[[str], None]) -> Verdict:
    """The transactional workload's verdict, added to `verdict`."""
    problems = check_pipeline(cluster, pipeline, source)
    ends = {p: cluster.high_watermark(pipeline.sink, p) for p in range(pipeline.partitions)}
    problems += _divergent_replicas(cluster, pipeline.sink, ends, 60)
    outcomes = list(pipeline.outcomes.values())
    note(f"transactions: {outcomes.count('committed')} committed, "
         f"{outcomes.count('aborted')} aborted, {outcomes.count('unknown')} unknown, "
         f"{pipeline.fenced} producers replaced; input acknowledged {len(source.acked)}, "
         f"output ends {ends}")
    return dataclasses.replace(verdict, transactions=outcomes.count("committed"),
                               transactional=problems)


def _leaders(cluster: Cluster, topic: str, partitions: int) -> str:
    """Leader and ISR of each partition as the reachable brokers answer, for the history."""
    try:
        md = cluster.metadata(topic).topics[topic].partitions
        return " ".join(f"p{p}:leader={md[p].leader},isr={sorted(md[p].isrs)}"
                        for p in range(partitions))
    except Exception as e:  # noqa: BLE001 - the history says what it could not read
        return f"(metadata unavailable: {e})"
