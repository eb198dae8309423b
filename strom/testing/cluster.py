"""Several real strom brokers sharing one ZooKeeper, for tests/cluster and bench/.

    with Cluster(zookeeper.connect_string, size=3) as cluster:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        cluster.kill(cluster.leader_of("t", 0))
        ...

Each cluster gets its own ZooKeeper chroot (a fresh `/strom-<random>`), so many clusters
can share one ZooKeeper server. Brokers are `BrokerProcess`es (node ids 1..size, free
ports, temp log dirs); `overrides` apply to all of them; `metrics=True` gives each its
own `metrics.listener` on a free port (`BrokerProcess.metrics_port`). Cluster state is read the way a
client sees it: Metadata through confluent-kafka's AdminClient. What a replica holds is read
from its files: `log_bytes()` cuts a replica's segments at an offset, so tests can compare
replicas byte for byte up to the high watermark.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from strom.testing.broker import BrokerProcess
from strom.testing.processes import free_port

__all__ = ["BackgroundProducer", "Cluster", "read_partitions", "wait_until"]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1,
               what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - a cluster in flux answers with errors
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout:.0f} s"
                               + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)


class Cluster:
    def __init__(self, zk_connect: str, size: int = 3, overrides: dict | None = None,
                 session_timeout_ms: int = 6000, metrics: bool = False) -> None:
        self.metrics = metrics
        self.chroot = f"/strom-{uuid.uuid4().hex[:10]}"
        self.zk_connect = zk_connect + self.chroot
        settings = {
            "zookeeper.connect": self.zk_connect,
            "zookeeper.session.timeout.ms": session_timeout_ms,
            "offsets.topic.num.partitions": 3,
            "group.initial.rebalance.delay.ms": 0,
        }
        settings.update(overrides or {})
        self.overrides = settings
        self.brokers: dict[int, BrokerProcess] = {}
        self.paused: set[int] = set()  # SIGSTOPped (see pause())
        # brokers a test has cut off from the network: clients do not bootstrap from them
        self.unreachable: set[int] = set()
        for node_id in range(1, size + 1):
            self.add_broker(node_id, start=False)

    def add_broker(self, node_id: int, start: bool = True, log_dir: Path | None = None,
                   overrides: dict | None = None) -> BrokerProcess:
        """A broker with the cluster's settings (and its own `overrides`), on a temp log
        dir or `log_dir`."""
        merged = {**self.overrides, **(overrides or {})}
        if self.metrics:
            merged["metrics.listener"] = f"http://127.0.0.1:{free_port()}"
        b = BrokerProcess(log_dir=log_dir, overrides=merged, node_id=node_id,
                          startup_timeout=30.0, stop_timeout=30.0)
        self.brokers[node_id] = b
        if start:
            b.start()
        return b

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start every broker at once (each start is mostly interpreter start-up, so this
        is about as fast as starting one) and wait until all are registered."""
        errors: list[BaseException] = []

        def start(b: BrokerProcess) -> None:
            try:
                b.start()
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=start, args=(b,), daemon=True)
                   for b in self.brokers.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        self.wait_for_brokers(set(self.brokers))

    def close(self) -> None:
        for node_id in list(self.paused):
            self.resume(node_id)
        for b in self.brokers.values():
            b.close()

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values())

    def live_bootstrap(self) -> str:
        """The brokers running, not paused and not marked unreachable."""
        return ",".join(b.bootstrap for i, b in self.brokers.items()
                        if b.is_alive() and i not in self.paused | self.unreachable)

    # --- faults -----------------------------------------------------------------------------
    def kill(self, node_id: int) -> None:
        self.brokers[node_id].kill()
        self.paused.discard(node_id)

    def stop(self, node_id: int) -> None:
        if node_id in self.paused:
            self.resume(node_id)
        self.brokers[node_id].stop()

    def restart(self, node_id: int, crash: bool = False) -> None:
        self.brokers[node_id].restart(crash=crash)

    def pause(self, node_id: int) -> None:
        """SIGSTOP the broker: it holds its sockets and its ZooKeeper session (until the
        session times out) but answers nothing; clients of `admin()` skip it."""
        pid = self.brokers[node_id].pid
        assert pid is not None and self.brokers[node_id].is_alive()
        self.paused.add(node_id)
        os.kill(pid, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        """SIGCONT a paused broker."""
        pid = self.brokers[node_id].pid
        if pid is not None and self.brokers[node_id].is_alive():
            os.kill(pid, signal.SIGCONT)
        self.paused.discard(node_id)

    # --- what clients see ---------------------------------------------------------------------
    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.live_bootstrap(),
                            "socket.timeout.ms": 5000})

    def metadata(self, topic: str | None = None):
        return self.admin().list_topics(topic=topic, timeout=10)

    def registered_brokers(self) -> set[int]:
        return set(self.metadata().brokers)

    def wait_for_brokers(self, ids: set[int], timeout: float = 30) -> None:
        wait_until(lambda: self.registered_brokers() == ids, timeout,
                   what=f"brokers {sorted(ids)} registered")

    def controller_id(self) -> int:
        return self.metadata().controller_id

    def partition(self, topic: str, partition: int):
        md = self.metadata(topic)
        return md.topics[topic].partitions[partition]

    def leader_of(self, topic: str, partition: int) -> int:
        return self.partition(topic, partition).leader

    def leader_not_controller(self, topic: str, partitions: int) -> int:
        """A broker that leads one of the topic's partitions and is not the controller."""
        controller = self.controller_id()
        return next(leader for leader in (self.leader_of(topic, p) for p in range(partitions))
                    if leader != controller)

    def isr_of(self, topic: str, partition: int) -> list[int]:
        return list(self.partition(topic, partition).isrs)

    def wait_for_isr(self, topic: str, partition: int, isr: set[int], timeout: float = 30
                     ) -> None:
        wait_until(lambda: set(self.isr_of(topic, partition)) == isr, timeout,
                   what=f"ISR of {topic}-{partition} == {sorted(isr)}")

    def wait_for_leader(self, topic: str, partition: int, timeout: float = 30,
                        not_on: int | None = None) -> int:
        def ok():
            leader = self.leader_of(topic, partition)
            return leader if leader >= 0 and leader != not_on and \
                self.brokers[leader].is_alive() else None
        return wait_until(ok, timeout, what=f"a leader for {topic}-{partition}")

    def high_watermark(self, topic: str, partition: int) -> int:
        """The partition's high watermark as a client sees it (ListOffsets latest, from the
        leader)."""
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        admin = self.admin()
        tp = TopicPartition(topic, partition)
        return admin.list_offsets({tp: OffsetSpec.latest()}, request_timeout=10)[tp] \
            .result(timeout=15).offset

    # --- what the replicas hold on disk -------------------------------------------------------
    def partition_dir(self, node_id: int, topic: str, partition: int) -> Path:
        return self.brokers[node_id].log_dir / f"{topic}-{partition}"

    def log_bytes(self, node_id: int, topic: str, partition: int, end_offset: int
                  ) -> tuple[bytes, int]:
        """The bytes of the replica's record batches below `end_offset` (its `.log`
        segments concatenated in offset order, cut at the first batch at or past
        `end_offset`), and the offset after the last batch kept: `end_offset` when the
        replica has everything below it. Raises ValueError if `end_offset` falls inside a
        batch (it is then no batch boundary of this replica)."""
        from strom.log.records import iter_batches

        d = self.partition_dir(node_id, topic, partition)
        data = b"".join(f.read_bytes() for f in sorted(d.glob("*.log")))
        cut, next_offset = 0, None
        for pos, header in iter_batches(data):
            if header.base_offset >= end_offset:
                break
            if header.last_offset >= end_offset:
                raise ValueError(f"offset {end_offset} is inside the batch "
                                 f"{header.base_offset}..{header.last_offset} of broker "
                                 f"{node_id}'s {topic}-{partition}")
            cut, next_offset = pos + header.size, header.last_offset + 1
        if next_offset is None:  # no batch below end_offset: an empty (or truncated) log
            first = sorted(d.glob("*.log"))
            next_offset = int(first[0].name.split(".")[0]) if first else 0
        return data[:cut], next_offset

    def create_topic(self, name: str, partitions: int, replication_factor: int,
                     config: dict | None = None,
                     assignment: list[list[int]] | None = None) -> None:
        """Create a topic and wait until every partition has a leader and a full ISR.
        With `assignment` (replicas per partition, the first one leads), `partitions`
        and `replication_factor` must match it."""
        from confluent_kafka.admin import NewTopic

        admin = self.admin()  # kept alive until the result is in
        if assignment is not None:
            assert len(assignment) == partitions and \
                all(len(r) == replication_factor for r in assignment)
            new = NewTopic(name, partitions, -1, replica_assignment=assignment,
                           config=config or {})
        else:
            new = NewTopic(name, partitions, replication_factor, config=config or {})
        from confluent_kafka import KafkaError, KafkaException

        # as an operator's tool does: a retriable error (ZooKeeper did not answer the
        # controller in time) is asked again; the first try may have gone through
        for attempt in range(3):
            try:
                admin.create_topics([new])[name].result(timeout=30)
                break
            except KafkaException as e:
                code = e.args[0].code()
                if attempt > 0 and code == KafkaError.TOPIC_ALREADY_EXISTS:
                    break
                if code != KafkaError.REQUEST_TIMED_OUT or attempt == 2:
                    raise
        # a broker may answer from a cache that has the assignment but not yet the
        # partition states (leader -1, empty ISR): wait for one answer with both
        for p in range(partitions):
            wait_until(lambda p=p: (x := self.partition(name, p)).leader >= 0
                       and set(x.isrs) == set(x.replicas), 30,
                       what=f"{name}-{p} led, with every replica in sync")


class BackgroundProducer:
    """An idempotent acks=all confluent-kafka producer writing numbered records from a
    thread, for failure tests:

        with BackgroundProducer(cluster.bootstrap, "t", partitions=3) as producer:
            producer.wait_for_acks(1000, timeout=30)   # progress
            cluster.kill(...)
        producer.acked    # [(partition, offset, seq)] for every delivery without error

    Record `seq` (0, 1, 2, ...) goes to partition seq % partitions with key b"k<seq>" and
    value b"<seq>", so a reader can tell every record apart and check each partition's
    order. `stop()` stops producing and flushes (bounded); delivery errors are kept in
    `errors` as (seq, KafkaError)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int,
                 config: dict | None = None, records_per_tick: int = 20,
                 tick_s: float = 0.01, max_in_flight: int = 5000) -> None:
        settings = {"bootstrap.servers": bootstrap, "acks": "all",
                    "enable.idempotence": True, "linger.ms": 5,
                    "message.timeout.ms": 120000, "socket.timeout.ms": 10000,
                    "reconnect.backoff.max.ms": 1000}
        settings.update(config or {})
        self.settings = settings
        self.topic = topic
        self.partitions = partitions
        self.records_per_tick = records_per_tick
        self.tick_s = tick_s
        self.max_in_flight = max_in_flight
        self.acked: list[tuple[int, int, int]] = []
        self.errors: list[tuple[int, Any]] = []
        self.sent = 0
        self.unflushed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def done(self) -> int:
        return len(self.acked) + len(self.errors)

    def _on_delivery(self, seq: int):
        def callback(err, msg) -> None:
            if err is None:
                self.acked.append((msg.partition(), msg.offset(), seq))
            else:
                self.errors.append((seq, err))
        return callback

    def _run(self) -> None:
        from confluent_kafka import Producer

        producer = Producer(self.settings)
        try:
            while not self._stop.is_set():
                if self.sent - self.done >= self.max_in_flight:
                    producer.poll(0.05)
                    continue
                for _ in range(self.records_per_tick):
                    seq = self.sent
                    try:
                        producer.produce(self.topic, value=b"%d" % seq, key=b"k%d" % seq,
                                         partition=seq % self.partitions,
                                         on_delivery=self._on_delivery(seq))
                    except BufferError:
                        break
                    self.sent += 1
                producer.poll(self.tick_s)
            self.unflushed = producer.flush(60)
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self._failure = e

    def start(self) -> BackgroundProducer:
        self._thread = threading.Thread(target=self._run, name="background-producer",
                                        daemon=True)
        self._thread.start()
        return self

    def wait_for_acks(self, more: int, timeout: float) -> int:
        """Wait until `more` further records are acknowledged (progress); returns the
        number acknowledged."""
        target = len(self.acked) + more
        wait_until(lambda: len(self.acked) >= target or self._failure, timeout,
                   interval=0.05, what=f"{more} more acknowledged records")
        if self._failure is not None:
            raise self._failure
        return len(self.acked)

    def stop(self) -> None:
        """Stop producing, wait for every outstanding delivery (flush, bounded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(90)
            if self._thread.is_alive():
                raise TimeoutError("the producer thread did not finish")
        if self._failure is not None:
            raise self._failure

    def __enter__(self) -> BackgroundProducer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_partitions(bootstrap: str, topic: str, ends: dict[int, int], timeout: float = 60
                    ) -> dict[int, list[tuple[int, bytes | None, bytes | None]]]:
    """Every record of the given partitions from the start up to `ends[p]` (exclusive),
    read with a confluent-kafka consumer (assigned, no group offsets): {partition:
    [(offset, key, value)]} in the order the consumer delivered them."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "socket.timeout.ms": 10000})
    out: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {p: [] for p in ends}
    position = {p: 0 for p in ends}
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        while any(position[p] < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {position} of {topic}, wanted up to {ends}")
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                p = msg.partition()
                if p in out and msg.offset() < ends[p]:
                    out[p].append((msg.offset(), msg.key(), msg.value()))
                    position[p] = max(position[p], msg.offset() + 1)
    finally:
        consumer.close()
    return out
