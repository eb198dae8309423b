"""Transactions across a coordinator failover (issue 12): three brokers, three
transactional confluent-kafka producers committing small transactions over three
partitions, and kill -9 of the transaction coordinator while transactions are open and
committing. Afterwards every transaction is complete or absent for read_committed (none
half visible; every acknowledged commit fully visible, every acknowledged abort absent),
no transaction stays open (the LSO reaches the high watermark), and once the killed broker
is back and in sync the replicas' logs, markers included, are byte-identical up to the
high watermark."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from strom.testing.cluster import wait_until

pytestmark = pytest.mark.timeout(180)

TOPIC = "txn-failover"
PARTITIONS = 3
PRODUCERS = 3
RECORDS_PER_TXN = 3


class TxnWorker(threading.Thread):
    """Commits (and every fourth time aborts) transactions of RECORDS_PER_TXN records,
    one per partition, until stopped; keeps each transaction's outcome as its client saw
    it: "committed", "aborted" or "unknown" (the call failed)."""

    def __init__(self, bootstrap: str, n: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.n = bootstrap, n
        self.outcomes: dict[str, str] = {}
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    def new_producer(self) -> Producer:
        p = Producer({"bootstrap.servers": self.bootstrap, "transactional.id": f"w{self.n}",
                      "transaction.timeout.ms": 6000, "linger.ms": 2,
                      "socket.timeout.ms": 5000, "message.timeout.ms": 5500})
        p.init_transactions(60)
        return p

    def run(self) -> None:
        try:
            producer = self.new_producer()
            t = 0
            while not self.stop_flag.is_set():
                txn = f"w{self.n}-t{t}"
                t += 1
                self.outcomes[txn] = "unknown"
                try:
                    producer.begin_transaction()
                    for k in range(RECORDS_PER_TXN):
                        producer.produce(TOPIC, f"{txn}-r{k}".encode(), partition=k % PARTITIONS)
                    if t % 4 == 0:
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
                        except KafkaException:
                            producer = self._replace(producer)
                    elif not err.retriable():
                        producer = self._replace(producer)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def _replace(self, producer: Producer) -> Producer:
        producer.flush(5)
        return self.new_producer()  # fences and aborts what the old one left open


def read_committed_values(bootstrap: str, committed: bool) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                  "enable.partition.eof": True, "enable.auto.commit": False,
                  "isolation.level": "read_committed" if committed else "read_uncommitted"})
    out, at_end = [], set()
    try:
        c.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 60
        while len(at_end) < PARTITIONS:
            assert time.monotonic() < deadline, "no end reached"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                at_end.add(m.partition())
            else:
                out.append(m.value())
    finally:
        c.close()
    return out


def end_offsets(cluster, committed: bool) -> list[int]:
    """ListOffsets latest per partition: the LSO (read_committed) or the high watermark."""
    from confluent_kafka import IsolationLevel
    from confluent_kafka.admin import OffsetSpec

    admin = cluster.admin()
    level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    result = admin.list_offsets({tp: OffsetSpec.latest() for tp in tps},
                                isolation_level=level, request_timeout=10)
    return [result[tp].result(timeout=15).offset for tp in tps]


def test_transactions_survive_a_coordinator_kill(make_cluster):
    cluster = make_cluster(3, overrides={
        "transaction.state.log.num.partitions": 1, "offsets.topic.num.partitions": 1,
        "transaction.abort.timed.out.transaction.cleanup.interval.ms": 500})
    cluster.create_topic(TOPIC, PARTITIONS, 3)
    workers = [TxnWorker(cluster.bootstrap, n) for n in range(PRODUCERS)]
    for w in workers:
        w.start()
    wait_until(lambda: all(sum(o == "committed" for o in w.outcomes.values()) >= 3
                           for w in workers), 60, what="transactions before the kill")
    coordinator = cluster.leader_of("__transaction_state", 0)
    cluster.kill(coordinator)
    before = {w.n: len(w.outcomes) for w in workers}
    wait_until(lambda: all(sum(o == "committed" for o in list(w.outcomes.values())[before[w.n]:])
                           >= 2 for w in workers), 90, what="commits after the kill")
    assert cluster.leader_of("__transaction_state", 0) != coordinator  # a new coordinator
    for w in workers:
        w.stop_flag.set()
    for w in workers:
        w.join(60)
        assert w.error is None, w.error
    cluster.restart(coordinator)

    # no transaction stays open: the LSO reaches the high watermark (open ones time out)
    wait_until(lambda: (lso := end_offsets(cluster, True)) == end_offsets(cluster, False)
               and lso, 60, what="LSO == HW")
    seen = read_committed_values(cluster.bootstrap, True)
    assert len(seen) == len(set(seen))
    by_txn: dict[str, set[bytes]] = defaultdict(set)
    for v in seen:
        by_txn[v.decode().rsplit("-r", 1)[0]].add(v)
    outcomes = {txn: o for w in workers for txn, o in w.outcomes.items()}
    for txn, values in by_txn.items():
        assert len(values) == RECORDS_PER_TXN, f"{txn} is half visible: {sorted(values)}"
        assert outcomes[txn] in ("committed", "unknown"), (txn, outcomes[txn])
    for txn, o in outcomes.items():
        if o == "committed":
            assert txn in by_txn, f"acknowledged commit {txn} is not visible"

    # every replica holds the same bytes, markers included, up to the high watermark
    for p in range(PARTITIONS):
        cluster.wait_for_isr(TOPIC, p, {1, 2, 3}, timeout=60)
        hw = cluster.high_watermark(TOPIC, p)
        logs = {b: cluster.log_bytes(b, TOPIC, p, hw) for b in cluster.brokers}
        assert len({data for data, _ in logs.values()}) == 1, f"replicas of {TOPIC}-{p} differ"
        assert all(end == hw for _, end in logs.values())
