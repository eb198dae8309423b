"""Nothing acknowledged is lost: acks=all under leader and controller crashes.

An idempotent acks=all producer writes numbered records without pause to an RF=3,
min.insync.replicas=2 topic while the test kill -9s the leader of each partition in turn
(waiting each time for a new leader, then restarting the killed broker and waiting until
it is back in the ISR), and finally the controller. Afterwards:

- every acknowledged record is read back at the offset its acknowledgement named, each
  partition's records in the order they were produced, and no record is at two offsets;
- the three replicas' logs are byte-identical up to the high watermark (segment files read
  from each broker's log dir).
"""

from __future__ import annotations

import pytest

from strom.testing.cluster import BackgroundProducer, read_partitions, wait_until

pytestmark = pytest.mark.timeout(180)

TOPIC = "durable"
PARTITIONS = 3


def wait_for_full_isr(cluster, topic: str, partitions: int, timeout: float = 45) -> None:
    for p in range(partitions):
        cluster.wait_for_isr(topic, p, set(cluster.brokers), timeout=timeout)


def test_acknowledged_records_survive_leader_and_controller_crashes(make_cluster):
    cluster = make_cluster(3, {"replica.lag.time.max.ms": 4000})
    cluster.create_topic(TOPIC, PARTITIONS, 3, {"min.insync.replicas": "2"})

    producer = BackgroundProducer(cluster.bootstrap, TOPIC, PARTITIONS)
    with producer:
        producer.wait_for_acks(500, timeout=30)
        for p in range(PARTITIONS):
            leader = cluster.leader_of(TOPIC, p)
            cluster.kill(leader)
            new_leader = cluster.wait_for_leader(TOPIC, p, not_on=leader, timeout=30)
            assert new_leader != leader
            producer.wait_for_acks(300, timeout=45)  # progress on the new leader
            cluster.restart(leader)
            wait_for_full_isr(cluster, TOPIC, PARTITIONS)
            producer.wait_for_acks(300, timeout=45)

        controller = cluster.controller_id()
        cluster.kill(controller)
        wait_until(lambda: cluster.controller_id() not in (-1, controller, None), 30,
                   what="a new controller")
        for p in range(PARTITIONS):
            cluster.wait_for_leader(TOPIC, p, timeout=30)
        producer.wait_for_acks(300, timeout=45)
        cluster.restart(controller)
        wait_for_full_isr(cluster, TOPIC, PARTITIONS)
        producer.wait_for_acks(300, timeout=45)

    print(f"{producer.sent} records sent, {len(producer.acked)} acknowledged")
    assert producer.unflushed == 0
    assert not producer.errors, f"{len(producer.errors)} deliveries failed: " \
        f"{producer.errors[:5]}"
    assert len(producer.acked) == producer.sent

    ends = {p: cluster.high_watermark(TOPIC, p) for p in range(PARTITIONS)}
    acked_by_partition: dict[int, dict[int, int]] = {p: {} for p in range(PARTITIONS)}
    for p, offset, seq in producer.acked:
        assert offset not in acked_by_partition[p], \
            f"two acknowledgements for {TOPIC}-{p} offset {offset}"
        acked_by_partition[p][offset] = seq
        assert offset < ends[p], f"acknowledged offset {offset} of partition {p} is not " \
            f"below the high watermark {ends[p]}"

    records = read_partitions(cluster.bootstrap, TOPIC, ends)
    seen: dict[int, tuple[int, int]] = {}
    for p in range(PARTITIONS):
        offsets = [o for o, _, _ in records[p]]
        assert offsets == list(range(ends[p])), f"partition {p}: offsets are not 0.." \
            f"{ends[p] - 1} once each"
        previous = -1
        for offset, key, value in records[p]:
            seq = int(value)
            assert key == b"k%d" % seq
            assert seq % PARTITIONS == p
            assert seq not in seen, f"record {seq} at {seen[seq]} and at {(p, offset)}"
            seen[seq] = (p, offset)
            assert seq > previous, f"partition {p}: record {seq} after {previous}"
            previous = seq
        for offset, seq in acked_by_partition[p].items():
            assert records[p][offset][2] == b"%d" % seq, \
                f"acknowledged record {seq} of partition {p} is not at offset {offset}"

    # every replica holds the same bytes up to the high watermark (a follower may need
    # one more fetch round for the last batches)
    def replicas_identical() -> bool:
        for p in range(PARTITIONS):
            copies = {b: cluster.log_bytes(b, TOPIC, p, ends[p]) for b in cluster.brokers}
            if any(end != ends[p] for _, end in copies.values()):
                return False
            if len({data for data, _ in copies.values()}) != 1:
                return False
        return True

    try:
        wait_until(replicas_identical, 30, what="identical replicas")
    except TimeoutError:
        for p in range(PARTITIONS):
            for b in cluster.brokers:
                data, end = cluster.log_bytes(b, TOPIC, p, ends[p])
                print(f"partition {p} broker {b}: {len(data)} bytes up to offset {end} "
                      f"(high watermark {ends[p]})")
        raise
