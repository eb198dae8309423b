"""Transactional clients for failure tests (confluent-kafka): a thread committing small
transactions and keeping what its client saw of each, and readers of a topic to its end
with either isolation level.

    worker = TxnWorker(bootstrap, "w1", topic, partitions=3).start()
    ... kill a broker ...
    worker.stop()
    worker.outcomes   # {"w1-t0": "committed", "w1-t3": "aborted", "w1-t5": "unknown", ...}

Transaction `<id>-t<n>` writes `<id>-t<n>-r<k>` to partition k % partitions, k < records
(every fourth transaction is aborted), so a reader can group what it sees by transaction.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition


class TxnWorker(threading.Thread):
    def __init__(self, bootstrap: str, transactional_id: str, topic: str, partitions: int,
                 records: int = 3, timeout_ms: int = 6000) -> None:
        super().__init__(daemon=True, name=f"txn-worker-{transactional_id}")
        self.bootstrap, self.transactional_id = bootstrap, transactional_id
        self.topic, self.partitions, self.records = topic, partitions, records
        self.timeout_ms = timeout_ms
        self.outcomes: dict[str, str] = {}  # transaction -> committed, aborted, unknown
        self.error: BaseException | None = None
        self.fatal: list[KafkaError] = []  # errors that needed a new producer
        self._stop_flag = threading.Event()

    def start(self) -> TxnWorker:
        super().start()
        return self

    def stop(self, timeout: float = 60) -> None:
        """Stop after the current transaction; re-raises what ended the thread."""
        self._stop_flag.set()
        self.join(timeout)
        if self.error is not None:
            raise self.error

    def committed(self, since: int = 0) -> int:
        return sum(o == "committed" for o in list(self.outcomes.values())[since:])

    def _producer(self) -> Producer:
        p = Producer({"bootstrap.servers": self.bootstrap,
                      "transactional.id": self.transactional_id,
                      "transaction.timeout.ms": self.timeout_ms, "linger.ms": 2,
                      "socket.timeout.ms": 5000, "message.timeout.ms": self.timeout_ms - 500})
        p.init_transactions(60)
        return p

    def run(self) -> None:
        try:
            producer = self._producer()
            n = 0
            while not self._stop_flag.is_set():
                txn = f"{self.transactional_id}-t{n}"
                n += 1
                self.outcomes[txn] = "unknown"
                try:
                    producer.begin_transaction()
                    for k in range(self.records):
                        producer.produce(self.topic, f"{txn}-r{k}".encode(),
                                         partition=k % self.partitions)
                    if n % 4 == 0:
                        producer.abort_transaction(30)
                        self.outcomes[txn] = "aborted"
                    else:
                        producer.commit_transaction(30)
                        self.outcomes[txn] = "committed"
                except KafkaException as e:
                    err = e.args[0]
                    if err.txn_requires_abort():
                        try:
                            producer.abort_transaction(30)
                            continue
                        except KafkaException:
                            pass
                    elif err.retriable():
                        continue
                    self.fatal.append(err)
                    try:
                        producer.flush(5)
                    except KafkaException:
                        pass  # a producer in a fatal state refuses even that
                    producer = self._producer()  # fences what the old one left open
        except BaseException as e:  # noqa: BLE001 - re-raised by stop()
            self.error = e


def read_to_end(bootstrap: str, topic: str, partitions: int, committed: bool,
                timeout: float = 60) -> list[bytes]:
    """Every value of `topic` up to each partition's end (the LSO for read_committed),
    partition by partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                  "enable.partition.eof": True, "enable.auto.commit": False,
                  "isolation.level": "read_committed" if committed else "read_uncommitted"})
    out: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    at_end: set[int] = set()
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while len(at_end) < partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end of {topic} reached in {timeout:.0f} s")
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(m.error())
                at_end.add(m.partition())
            else:
                out[m.partition()].append(m.value())
    finally:
        c.close()
    return [v for p in range(partitions) for v in out[p]]


def check_atomic(values: list[bytes], outcomes: dict[str, str], records: int) -> None:
    """What read_committed saw of TxnWorkers' transactions: each one whole or absent, no
    record twice, every acknowledged commit there and no acknowledged abort."""
    assert len(values) == len(set(values)), "a record is read twice"
    seen: dict[str, set[bytes]] = {}
    for v in values:
        seen.setdefault(v.decode().rsplit("-r", 1)[0], set()).add(v)
    for txn, got in seen.items():
        assert len(got) == records, f"{txn} is half visible: {sorted(got)}"
        assert outcomes[txn] in ("committed", "unknown"), (txn, outcomes[txn])
    for txn, outcome in outcomes.items():
        if outcome == "committed":
            assert txn in seen, f"acknowledged commit {txn} is not visible"
