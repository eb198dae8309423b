"""Transactions across a coordinator failover (issue 12): three brokers, three
transactional confluent-kafka producers committing small transactions over three
partitions, and kill -9 of the transaction coordinator while transactions are open and
committing. Afterwards every transaction is complete or absent for read_committed (none
half visible; every acknowledged commit fully visible, every acknowledged abort absent),
no transaction stays open (the LSO reaches the high watermark), and once the killed broker
is back and in sync the replicas' logs, markers included, are byte-identical up to the
high watermark."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition

from strom.testing.cluster import wait_until
from strom.testing.txn_clients import TxnWorker, check_atomic, read_to_end

pytestmark = pytest.mark.timeout(180)

TOPIC = "txn-failover"
PARTITIONS = 3
PRODUCERS = 3
RECORDS_PER_TXN = 3


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
    workers = [TxnWorker(cluster.bootstrap, f"w{n}", TOPIC, PARTITIONS, RECORDS_PER_TXN).start()
               for n in range(PRODUCERS)]
    wait_until(lambda: all(w.committed() >= 3 for w in workers), 60,
               what="transactions before the kill")
    coordinator = cluster.leader_of("__transaction_state", 0)
    cluster.kill(coordinator)
    before = [len(w.outcomes) for w in workers]
    wait_until(lambda: all(w.committed(since) >= 2
                           for w, since in zip(workers, before, strict=True)), 90,
               what="commits after the kill")
    assert cluster.leader_of("__transaction_state", 0) != coordinator  # a new coordinator
    for w in workers:
        w.stop()
    cluster.restart(coordinator)

    # no transaction stays open: the LSO reaches the high watermark (open ones time out)
    wait_until(lambda: (lso := end_offsets(cluster, True)) == end_offsets(cluster, False)
               and lso, 60, what="LSO == HW")
    check_atomic(read_to_end(cluster.bootstrap, TOPIC, PARTITIONS, True),
                 {txn: o for w in workers for txn, o in w.outcomes.items()}, RECORDS_PER_TXN)

    # every replica holds the same bytes, markers included, up to the high watermark
    for p in range(PARTITIONS):
        cluster.wait_for_isr(TOPIC, p, {1, 2, 3}, timeout=60)
        hw = cluster.high_watermark(TOPIC, p)
        logs = {b: cluster.log_bytes(b, TOPIC, p, hw) for b in cluster.brokers}
        assert len({data for data, _ in logs.values()}) == 1, f"replicas of {TOPIC}-{p} differ"
        assert all(end == hw for _, end in logs.values())
