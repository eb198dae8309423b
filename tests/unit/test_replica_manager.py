"""strom.replication.replica_manager.ReplicaManager without sockets: partitions follow the
metadata cache, reads are bounded by the high watermark (consumers) or the log end offset
(followers), follower fetches are validated before they move anything (issue 10, defect 6),
parked fetches and acks=all produces are woken, and one partition's corrupt batch does not
fail the others' reads (defect 4)."""

from __future__ import annotations

import asyncio
import os
import struct
import uuid

import pytest

from strom.clock import ManualClock
from strom.cluster import model
from strom.cluster.metadata_cache import MetadataCache
from strom.config import BrokerConfig
from strom.log.manager import LogManager
from strom.log.records import NewRecord, build_batch
from strom.protocol.errors import ErrorCode, KafkaError
from strom.replication.replica_manager import FetchPartitionRequest, ReplicaManager

NOW = 1_700_000_000_000
EPOCH = 4
TOPIC_ID = uuid.uuid4()


def set_topic(cache: MetadataCache, partitions: dict[int, tuple], configs=None) -> None:
    """partition -> (replicas, leader, isr)"""
    cache.topics["t"] = model.TopicInfo("t", TOPIC_ID, {
        p: model.PartitionInfo(p, tuple(replicas), model.PartitionState(
            leader, EPOCH, tuple(isr), 1, 0))
        for p, (replicas, leader, isr) in partitions.items()}, dict(configs or {}))


def manager(tmp_path, partitions=None, configs=None, **broker) -> ReplicaManager:
    clock = ManualClock(NOW)
    logs = LogManager([str(tmp_path)], clock, node_id=1)
    logs.prepare_dirs()
    cache = MetadataCache(None)
    rm = ReplicaManager(1, BrokerConfig(broker), clock, logs, cache)
    set_topic(cache, partitions or {0: ((1, 2), 1, (1, 2))}, configs)
    rm.on_topics_changed({"t"})
    return rm


def batch(value: bytes = b"v") -> bytes:
    return build_batch([NewRecord(value, key=b"k", timestamp=NOW)])


def fetch_req(offset: int, partition: int = 0, epoch: int = -1) -> FetchPartitionRequest:
    return FetchPartitionRequest("t", partition, offset, 1 << 20, epoch)


def fetch(rm: ReplicaManager, reqs, replica_id: int = -1, min_bytes: int = 0,
          max_wait_ms: int = 0):
    return rm.fetch(reqs, 1 << 20, min_bytes, max_wait_ms, replica_id)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def code(result) -> int:
    return result.error.code if result.error else ErrorCode.none


# --- following the metadata ----------------------------------------------------------------
def test_partitions_follow_the_metadata(tmp_path):
    rm = manager(tmp_path, {0: ((1, 2), 1, (1, 2)), 1: ((2, 1), 2, (2, 1)),
                            2: ((2, 3), 2, (2, 3))})
    assert set(rm.partitions) == {("t", 0), ("t", 1)}  # not a replica of partition 2
    assert rm.partitions[("t", 0)].is_leader and not rm.partitions[("t", 1)].is_leader
    assert rm.partitions[("t", 0)].leader_epoch == EPOCH
    with pytest.raises(KafkaError) as e:
        rm.get_partition("t", 2)
    assert e.value.code == ErrorCode.not_leader_or_follower
    with pytest.raises(KafkaError) as e:
        rm.get_partition("nope", 0)
    assert e.value.code == ErrorCode.unknown_topic_or_partition
    dirs = [rm.partitions[tp].log.dir for tp in rm.partitions]
    del rm.cache.topics["t"]
    rm.on_topics_changed({"t"})  # deleted: logs go
    assert rm.partitions == {} and not any(os.path.exists(d) for d in dirs)


# --- reads ---------------------------------------------------------------------------------
def test_consumers_read_to_the_high_watermark_followers_to_the_log_end(tmp_path):
    rm = manager(tmp_path)
    for _ in range(3):
        rm.append("t", 0, batch(), acks=1)
    consumer = rm.read_partition(fetch_req(0), 1 << 20, min_one=True)
    assert consumer.error is None and consumer.high_watermark == 0 and consumer.size == 0
    follower = rm.read_partition(fetch_req(0), 1 << 20, min_one=True, replica_id=2)
    assert follower.error is None and follower.size == 3 * len(batch())
    past = rm.read_partition(fetch_req(4), 1 << 20, min_one=True)
    assert code(past) == ErrorCode.offset_out_of_range


def test_follower_fetch_moves_the_high_watermark_and_completes_acks_all(tmp_path):
    rm = manager(tmp_path)

    async def go():
        result = rm.append("t", 0, batch(), acks=-1)
        waiter = asyncio.ensure_future(
            rm.wait_for_replication("t", 0, result.last_offset + 1, 10_000))
        await asyncio.sleep(0)
        assert not waiter.done()
        results = await fetch(rm, [fetch_req(1, epoch=EPOCH)], replica_id=2)
        assert code(results[0]) == ErrorCode.none
        await waiter  # the high watermark passed the batch
        return rm.partitions[("t", 0)]

    p = run(go())
    assert p.high_watermark == 1 and p.followers[2].log_end_offset == 1


@pytest.mark.parametrize("offset", [1000, -5])
def test_follower_fetch_outside_the_log_changes_nothing(tmp_path, offset):
    rm = manager(tmp_path, {0: ((1, 2, 3), 1, (1, 2))})
    for _ in range(3):
        rm.append("t", 0, batch(), acks=1)
    p = rm.partitions[("t", 0)]
    results = run(fetch(rm, [fetch_req(offset)], replica_id=2))
    assert code(results[0]) == ErrorCode.offset_out_of_range
    assert p.followers[2].log_end_offset == -1 and p.high_watermark == 0
    # nor does an out-of-sync follower claim its way into the ISR
    run(fetch(rm, [fetch_req(offset)], replica_id=3))
    assert p.followers[3].log_end_offset == -1
    assert p.isr_to_expand({1, 2, 3}) is None
    # a valid fetch still counts
    run(fetch(rm, [fetch_req(3)], replica_id=2))
    assert p.followers[2].log_end_offset == 3 and p.high_watermark == 3


def test_fetch_with_a_replica_id_that_is_no_follower_is_refused(tmp_path):
    rm = manager(tmp_path)
    rm.append("t", 0, batch(), acks=1)
    no_epoch, with_epoch = run(fetch(rm, [fetch_req(0)], replica_id=7))[0], \
        run(fetch(rm, [fetch_req(0, epoch=EPOCH)], replica_id=7))[0]
    assert code(no_epoch) == ErrorCode.not_leader_or_follower and no_epoch.read is None
    assert code(with_epoch) == ErrorCode.unknown_leader_epoch
    assert 7 not in rm.partitions[("t", 0)].followers


def test_a_fetch_at_an_old_epoch_is_fenced_and_not_counted(tmp_path):
    rm = manager(tmp_path)
    rm.append("t", 0, batch(), acks=1)
    results = run(fetch(rm, [fetch_req(1, epoch=EPOCH - 1)], replica_id=2))
    assert code(results[0]) == ErrorCode.fenced_leader_epoch
    assert rm.partitions[("t", 0)].followers[2].log_end_offset == -1


def test_a_parked_fetch_is_answered_when_data_arrives(tmp_path):
    rm = manager(tmp_path, {0: ((1,), 1, (1,))})

    async def go():
        parked = asyncio.ensure_future(fetch(rm, [fetch_req(0)], min_bytes=1,
                                             max_wait_ms=60_000))
        await asyncio.sleep(0)
        assert not parked.done()
        rm.append("t", 0, batch(), acks=1)  # a single-replica ISR: the HW moves at once
        return await parked

    results = run(go())
    assert results[0].size == len(batch())


def test_a_tailing_fetch_parks_without_reading(tmp_path, monkeypatch):
    """A consumer's fetch at the high watermark parks at once (no read of the log); the
    one read is made when data arrives."""
    rm = manager(tmp_path, {0: ((1,), 1, (1,))})
    rm.append("t", 0, batch(), acks=1)
    reads = []
    real_read_all = rm.read_all
    monkeypatch.setattr(rm, "read_all", lambda *a, **k: reads.append(a) or real_read_all(*a, **k))

    async def go():
        parked = asyncio.ensure_future(fetch(rm, [fetch_req(1)], min_bytes=1,
                                             max_wait_ms=60_000))
        await asyncio.sleep(0)
        assert not parked.done() and reads == []
        rm.append("t", 0, batch(b"second"), acks=1)
        return await parked

    results = run(go())
    assert len(reads) == 1 and results[0].size == len(batch(b"second"))


@pytest.mark.parametrize("offset, epoch, expected", [
    (0, -1, ErrorCode.none),  # behind the end: read at once
    (1, EPOCH - 1, ErrorCode.fenced_leader_epoch),
    (1, EPOCH + 1, ErrorCode.unknown_leader_epoch),
    (5, -1, ErrorCode.offset_out_of_range),
])
def test_a_fetch_not_at_the_end_is_answered_at_once(tmp_path, offset, epoch, expected):
    rm = manager(tmp_path, {0: ((1,), 1, (1,))})
    rm.append("t", 0, batch(), acks=1)
    results = run(asyncio.wait_for(fetch(rm, [fetch_req(offset, epoch=epoch)], min_bytes=1,
                                         max_wait_ms=60_000), 5))
    assert code(results[0]) == expected


def test_a_parked_tailing_fetch_learns_that_leadership_moved(tmp_path):
    rm = manager(tmp_path, {0: ((1, 2), 1, (1, 2))})

    async def go():
        parked = asyncio.ensure_future(fetch(rm, [fetch_req(0)], min_bytes=1,
                                             max_wait_ms=60_000))
        await asyncio.sleep(0)
        assert not parked.done()
        set_topic(rm.cache, {0: ((1, 2), 2, (2,))})
        rm.on_topics_changed({"t"})
        return await asyncio.wait_for(parked, 5)

    assert code(run(go())[0]) == ErrorCode.not_leader_or_follower


def test_acks_all_waiters_fail_when_leadership_moves(tmp_path):
    rm = manager(tmp_path)

    async def go():
        result = rm.append("t", 0, batch(), acks=-1)
        waiter = asyncio.ensure_future(
            rm.wait_for_replication("t", 0, result.last_offset + 1, 60_000))
        await asyncio.sleep(0)
        set_topic(rm.cache, {0: ((1, 2), 2, (2,))})
        rm.on_topics_changed({"t"})
        with pytest.raises(KafkaError) as e:
            await waiter
        return e.value.code

    assert run(go()) == ErrorCode.not_leader_or_follower
    assert not rm.partitions[("t", 0)].is_leader


def test_acks_all_times_out_while_a_follower_lags(tmp_path):
    rm = manager(tmp_path)

    async def go():
        result = rm.append("t", 0, batch(), acks=-1)
        with pytest.raises(KafkaError) as e:
            await rm.wait_for_replication("t", 0, result.last_offset + 1, 1)
        return e.value.code

    assert run(go()) == ErrorCode.request_timed_out


def test_a_corrupt_partition_fails_alone(tmp_path):
    rm = manager(tmp_path, {0: ((1,), 1, (1,)), 1: ((1,), 1, (1,))},
                 configs={"index.interval.bytes": "0"})
    for p in (0, 1):
        for _ in range(3):
            rm.append("t", p, batch(), acks=1)
    seg = rm.partitions[("t", 0)].log.active_segment
    with open(seg.log_path, "r+b") as f:  # batch 1's length runs past the file
        f.seek(len(batch()) + 8)
        f.write(struct.pack(">i", 0x7FFFFFF0))
    results = run(fetch(rm, [fetch_req(1, partition=0), fetch_req(0, partition=1)]))
    assert code(results[0]) == ErrorCode.corrupt_message
    assert code(results[1]) == ErrorCode.none and results[1].size == 3 * len(batch())


# --- fetches parked without a task (ReplicaManager.park, for the connection's at-once path) --
def test_a_fetch_parked_without_a_task_is_answered_by_the_append_itself(tmp_path):
    """`woken` runs inside the append that wakes the partition (no turn of the loop between
    them), once; the call leaves the waiters as it is woken."""
    rm = manager(tmp_path, {0: ((1,), 1, (1,))})
    calls = []

    async def go():
        rm.park((("t", 0),), 60, calls.append)
        assert calls == [] and len(rm._waiters[("t", 0)]) == 1
        rm.append("t", 0, batch(), acks=1)
        woken_by_append = list(calls)
        rm.append("t", 0, batch(), acks=1)  # woken once only
        return woken_by_append, dict(rm._waiters)

    woken_by_append, waiters = run(go())
    assert woken_by_append == [False] and calls == [False]
    assert waiters == {}


def test_a_fetch_parked_without_a_task_expires_or_is_cancelled_without_a_trace(tmp_path):
    rm = manager(tmp_path, {0: ((1,), 1, (1,))})
    calls = []

    async def go():
        rm.park((("t", 0),), 0.05, calls.append)
        await asyncio.sleep(0.3)
        expired = list(calls)
        after_expiry = dict(rm._waiters)
        cancelled = rm.park((("t", 0),), 0.05, calls.append)
        cancelled.cancel()
        after_cancel = dict(rm._waiters)
        await asyncio.sleep(0.3)
        rm.append("t", 0, batch(), acks=1)
        return expired, after_expiry, after_cancel

    expired, after_expiry, after_cancel = run(go())
    assert expired == [True] and calls == [True]  # the cancelled one was never called
    assert after_expiry == {} and after_cancel == {}


def test_a_produce_of_several_partitions_wakes_consumers_once_all_are_appended(tmp_path):
    """`append_produced` with `woken` leaves the consumers' parked fetches of the partition
    to the caller (`wake_consumers`, after its last append) and wakes followers at once."""
    rm = manager(tmp_path, {0: ((1, 2), 1, (1, 2)), 1: ((1, 2), 1, (1, 2))})
    tps = (("t", 0), ("t", 1))

    async def go():
        seen: list = []
        rm.park(tps, 60, lambda expired: seen.append(
            [rm.partitions[tp].log.log_end_offset for tp in tps]))
        follower = asyncio.get_running_loop().create_future()
        rm._replica_waiters[("t", 0)].add(follower)
        woken: dict = {}
        await rm.append_produced("t", 0, batch(), 1, woken=woken)
        after_first = (list(seen), follower.done())
        await rm.append_produced("t", 1, batch(), 1, woken=woken)
        before_wake = list(seen)
        rm.wake_consumers(woken)
        return after_first, before_wake, seen, list(woken), dict(rm._waiters)

    after_first, before_wake, seen, woken, waiters = run(go())
    assert after_first == ([], True) and before_wake == []
    assert seen == [[1, 1]]  # once, with both appended
    assert woken == [("t", 0), ("t", 1)] and waiters == {}


def test_a_metadata_change_wakes_consumers_once_it_is_whole(tmp_path):
    """A consumer's fetch parked on two partitions of a topic that is deleted is answered
    once both are gone, not while the first is stopped."""
    rm = manager(tmp_path, {0: ((1,), 1, (1,)), 1: ((1,), 1, (1,))})
    tps = (("t", 0), ("t", 1))

    async def go():
        seen: list = []
        rm.park(tps, 60, lambda expired: seen.append([tp in rm.partitions for tp in tps]))
        del rm.cache.topics["t"]
        rm.on_topics_changed({"t"})
        return seen, dict(rm._waiters)

    seen, waiters = run(go())
    assert seen == [[False, False]] and waiters == {}


def test_a_follower_fetch_wakes_consumers_once_every_high_watermark_moved(tmp_path):
    """acks=all with a follower in the ISR: the follower's one fetch of two partitions moves
    both high watermarks; a consumer's fetch parked on both sees both moved."""
    rm = manager(tmp_path, {0: ((1, 2), 1, (1, 2)), 1: ((1, 2), 1, (1, 2))})
    tps = (("t", 0), ("t", 1))

    async def go():
        seen: list = []
        for tp in tps:
            rm.append(*tp, batch(), acks=-1)
        rm.park(tps, 60, lambda expired: seen.append(
            [rm.partitions[tp].high_watermark for tp in tps]))
        rm._update_followers([fetch_req(1, 0), fetch_req(1, 1)], 2)
        return seen, dict(rm._waiters)

    seen, waiters = run(go())
    assert seen == [[1, 1]] and waiters == {}


def test_an_error_answering_a_parked_fetch_does_not_fail_the_append_that_woke_it(
        tmp_path, caplog):
    rm = manager(tmp_path, {0: ((1,), 1, (1,))})
    calls = []

    def broken(expired: bool) -> None:
        raise RuntimeError("a bug")

    async def go():
        rm.park((("t", 0),), 60, broken)
        rm.park((("t", 0),), 60, calls.append)  # a second waiter is still woken
        result = rm.append("t", 0, batch(), acks=1)
        return result, rm.read_partition(fetch_req(0), 1 << 20, min_one=True)

    result, read = run(go())
    assert result.base_offset == 0 and read.size == len(batch())
    assert calls == [False]
    assert "Answering a parked fetch of t-0 failed" in caplog.text
