"""strom.replication.fetcher.ReplicaFetcher applying a leader's Fetch response, without
sockets: a partition whose batch cannot be appended backs off alone, the others of the same
leader are appended (issue 10, defect 4, follower side)."""

from __future__ import annotations

import asyncio
import uuid

from strom.cluster.model import PartitionState
from strom.config import BrokerConfig
from strom.log.records import NewRecord, build_batch
from strom.protocol import fetch_response
from strom.protocol.errors import ErrorCode
from strom.replication.fetcher import FETCH_VERSION, FetchTarget, ReplicaFetcher
from strom.replication.partition import Partition
from tests.unit.test_partition_log import open_log

NOW = 1_700_000_000_000
LEADER = 1


class FakeConnection:
    """Answers every request with one prepared Fetch response frame."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.requests = 0

    async def request_frame(self, request) -> bytes:
        self.requests += 1
        return self.frame


def follower(tmp_path, index: int) -> FetchTarget:
    plog = open_log(tmp_path / str(index))
    p = Partition("t", index, uuid.uuid4(), plog, broker_id=2)
    p.make_follower(PartitionState(LEADER, 3, (1, 2), 1, 0), (1, 2))
    return FetchTarget(p, 3, needs_truncation=False)


def batch(value: bytes, corrupt: bool = False) -> bytes:
    data = bytearray(build_batch([NewRecord(value, key=b"k", timestamp=NOW)]))
    if corrupt:
        data[-1] ^= 0xFF  # a record byte: the CRC no longer matches
    return bytes(data)


def response(records: dict[int, tuple[int, bytes]]) -> bytes:
    """A Fetch v12 response frame (no size prefix) for topic t: partition -> (error,
    records)."""
    parts = [fetch_response.FetchPartitionData(p, code, 1, 1, 0, data)
             for p, (code, data) in records.items()]
    out, _ = fetch_response.encode(FETCH_VERSION, 7, 0, ErrorCode.none, 0,
                                   [fetch_response.FetchTopicData("t", uuid.uuid4(), parts)])
    return b"".join(bytes(x) for x in out)[4:]


def run_fetch(targets: dict, frame: bytes) -> ReplicaFetcher:
    async def go() -> ReplicaFetcher:
        fetcher = ReplicaFetcher(2, LEADER, BrokerConfig({}), None, lambda tp: None)
        fetcher._task.cancel()  # driven by hand here, no connection
        fetcher.targets.update(targets)
        await fetcher._fetch(FakeConnection(frame), dict(targets))
        return fetcher

    return asyncio.run(go())


def test_a_corrupt_batch_holds_back_only_its_partition(tmp_path):
    bad, good = follower(tmp_path, 0), follower(tmp_path, 1)
    targets = {("t", 0): bad, ("t", 1): good}
    run_fetch(targets, response({0: (ErrorCode.none, batch(b"x", corrupt=True)),
                                 1: (ErrorCode.none, batch(b"y"))}))
    assert bad.partition.log.log_end_offset == 0  # nothing of it was appended
    assert bad.errors == 1 and bad.delayed_until > 0  # retried after the backoff
    assert good.partition.log.log_end_offset == 1 and good.errors == 0
    assert good.delayed_until == 0


def test_a_leader_error_for_one_partition_delays_only_that_one(tmp_path):
    failed, good = follower(tmp_path, 0), follower(tmp_path, 1)
    targets = {("t", 0): failed, ("t", 1): good}
    run_fetch(targets, response({0: (ErrorCode.corrupt_message, b""),
                                 1: (ErrorCode.none, batch(b"y"))}))
    assert failed.partition.log.log_end_offset == 0 and failed.delayed_until > 0
    assert good.partition.log.log_end_offset == 1


class FakeEpochConnection:
    """Answers OffsetForLeaderEpoch: every partition's epoch 3 ends at offset 1."""

    async def request(self, request):
        from types import SimpleNamespace as NS

        return NS(topics=[NS(topic="t", partitions=[
            NS(partition=p.partition, error_code=ErrorCode.none, leader_epoch=3,
               end_offset=1) for p in request.topics[0].partitions])])


def test_a_truncation_that_fails_holds_back_only_its_partition(tmp_path, monkeypatch):
    """Before: an error truncating one partition (a corrupt batch met by find_batch, an
    I/O error) escaped the fetcher's truncation step; the step was retried for the whole
    leader and every partition it follows stopped replicating."""
    from tests.unit.test_partition_log import append

    bad, good = follower(tmp_path, 0), follower(tmp_path, 1)
    for t in (bad, good):
        append(t.partition.log, [b"a"], epoch=3)
        append(t.partition.log, [b"b"], epoch=3)
        t.needs_truncation = True

    def failing_truncate(offset):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(bad.partition.log, "truncate_to", failing_truncate)
    targets = {("t", 0): bad, ("t", 1): good}

    async def go() -> None:
        fetcher = ReplicaFetcher(2, LEADER, BrokerConfig({}), None, lambda tp: None)
        fetcher._task.cancel()  # driven by hand here, no connection
        fetcher.targets.update(targets)
        await fetcher._truncate(FakeEpochConnection(), dict(targets))

    asyncio.run(go())
    assert good.partition.log.log_end_offset == 1 and not good.needs_truncation
    assert bad.needs_truncation and bad.errors == 1 and bad.delayed_until > 0
