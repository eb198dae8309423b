"""The partition side of transactions: producer state with open transactions, the last
stable offset, `.txnindex` and `.snapshot` files (golden bytes), recovery from them."""

from __future__ import annotations

import os
import random

import pytest

from strom.clock import ManualClock
from strom.config import BrokerConfig, TopicConfig, validate_topic_configs
from strom.log import producer_snapshot
from strom.log.partition_log import PartitionLog
from strom.log.records import NewRecord, build_batch
from strom.log.transaction_index import AbortedTxn, TransactionIndex, decode_entries
from strom.protocol.batch import read_header
from strom.protocol.errors import (
    InvalidProducerEpoch,
    InvalidTxnState,
    TransactionCoordinatorFenced,
)

NOW = 1_700_000_000_000


def topic_config(**overrides: object) -> TopicConfig:
    raw = {k.replace("_", "."): str(v) for k, v in overrides.items()}
    return TopicConfig(BrokerConfig({}), validate_topic_configs(raw))


def open_log(path, needs_recovery: bool = False, **overrides) -> PartitionLog:
    return PartitionLog.open(str(path), "t", 0, topic_config(**overrides),
                             ManualClock(NOW), needs_recovery=needs_recovery)


class Producer:
    def __init__(self, plog: PartitionLog, pid: int, epoch: int = 0) -> None:
        self.plog, self.pid, self.epoch, self.seq = plog, pid, epoch, 0

    def send(self, n: int = 1, transactional: bool = True):
        data = bytearray(build_batch(
            [NewRecord(b"v%d" % (self.seq + i), key=b"k", timestamp=NOW) for i in range(n)],
            producer_id=self.pid, producer_epoch=self.epoch, base_sequence=self.seq,
            is_transactional=transactional))
        result = self.plog.append_as_leader(data, read_header(data), 0)
        self.seq += n
        return result

    def end(self, commit: bool, coordinator_epoch: int = 0, epoch: int | None = None):
        return self.plog.append_marker(self.pid, self.epoch if epoch is None else epoch,
                                       coordinator_epoch, commit, 0)


def replicate(plog: PartitionLog) -> None:
    plog.high_watermark = plog.log_end_offset


def test_txnindex_entry_golden_bytes(tmp_path):
    entry = AbortedTxn(producer_id=5, first_offset=10, last_offset=20, last_stable_offset=21)
    golden = bytes.fromhex("0000" "0000000000000005" "000000000000000a" "0000000000000014"
                           "0000000000000015")
    assert entry.encode() == golden
    assert decode_entries(golden + golden[:7]) == [entry]  # a torn tail is ignored
    index = TransactionIndex(str(tmp_path / "00000000000000000000.txnindex"))
    index.append(entry)
    assert TransactionIndex(index.path).entries == [entry]
    index.truncate_to(20)
    assert not os.path.exists(index.path)


def test_snapshot_golden_bytes():
    entry = producer_snapshot.SnapshotEntry(
        producer_id=1, epoch=2, last_sequence=3, last_offset=4, offset_delta=5, timestamp=6,
        coordinator_epoch=7, current_txn_first_offset=8)
    golden = bytes.fromhex(
        "0001" "8b65c022" "00000001"  # version 1, CRC-32C of the rest, one entry
        "0000000000000001" "0002" "00000003" "0000000000000004" "00000005"
        "0000000000000006" "00000007" "0000000000000008")
    assert producer_snapshot.encode([entry]) == golden
    assert producer_snapshot.decode(golden) == [entry]
    with pytest.raises(producer_snapshot.CorruptSnapshot):
        producer_snapshot.decode(golden[:-1] + b"\x09")


def test_lso_follows_open_transactions_and_the_high_watermark(tmp_path):
    plog = open_log(tmp_path / "t-0")
    a, b = Producer(plog, 100), Producer(plog, 200)
    plain = plog.append_as_leader(*_plain_batch())
    replicate(plog)
    assert plog.last_stable_offset == plain.last_offset + 1 == 1
    a.send(2)                      # offsets 1-2: a's transaction starts at 1
    b.send(1)                      # offset 3: b's at 3
    replicate(plog)
    assert plog.last_stable_offset == 1
    b.end(commit=False)            # offset 4: b aborted, a still open
    replicate(plog)
    assert plog.last_stable_offset == 1
    marker = a.end(commit=True)    # offset 5
    assert plog.last_stable_offset == 1  # the marker is not below the high watermark yet
    replicate(plog)
    assert plog.last_stable_offset == plog.high_watermark == marker.last_offset + 1 == 6
    # b's abort was written while a's transaction (from 1) was open: that is its LSO
    assert plog.collect_aborted_txns(0, 6) == [AbortedTxn(200, 3, 4, 1)]
    assert plog.collect_aborted_txns(5, 6) == []


def _plain_batch():
    data = bytearray(build_batch([NewRecord(b"p", timestamp=NOW)]))
    return data, read_header(data), 0


def test_bad_markers_and_batches(tmp_path):
    plog = open_log(tmp_path / "t-0")
    p = Producer(plog, 7, epoch=3)
    p.send()
    with pytest.raises(InvalidTxnState):
        p.send(transactional=False)
    with pytest.raises(InvalidProducerEpoch):
        p.end(commit=True, epoch=2)
    p.end(commit=True, coordinator_epoch=4)
    with pytest.raises(TransactionCoordinatorFenced):
        p.end(commit=False, coordinator_epoch=3)
    p.epoch = 2
    with pytest.raises(InvalidProducerEpoch):
        p.send()


def test_lso_never_moves_backwards(tmp_path):
    plog = open_log(tmp_path / "t-0")
    rng = random.Random(12)
    producers = [Producer(plog, 1000 + i) for i in range(4)]
    open_ = set()
    last = 0
    for _ in range(300):
        p = rng.choice(producers)
        action = rng.random()
        if action < 0.5:
            p.send(rng.randint(1, 3))
            open_.add(p.pid)
        elif action < 0.75 and p.pid in open_:
            p.end(commit=rng.random() < 0.5)
            open_.discard(p.pid)
        else:
            plog.high_watermark = rng.randint(plog.high_watermark, plog.log_end_offset)
        lso = plog.last_stable_offset
        assert last <= lso <= plog.high_watermark
        last = lso


def test_restart_after_a_crash_rebuilds_the_exact_state(tmp_path):
    path = tmp_path / "t-0"
    plog = open_log(path, segment_bytes=400)
    a, b = Producer(plog, 1), Producer(plog, 2)
    for _ in range(6):              # several segments, snapshots at each roll
        a.send(2)
        a.end(commit=False)
    a.send(1)                       # open, spanning rolls
    for _ in range(4):
        b.send(3)
        b.end(commit=True)
    replicate(plog)
    assert len(plog.segments) > 2
    assert any(n.endswith(".snapshot") for n in os.listdir(path))
    want_lso = plog.last_stable_offset
    want_aborted = plog.collect_aborted_txns(0, plog.log_end_offset)
    want_ongoing = plog.producer_state.ongoing_txns()
    hw = plog.high_watermark
    plog.flush_to_os()
    # kill -9: no close, no snapshot at the end; the next open recovers
    again = PartitionLog.open(str(path), "t", 0, topic_config(segment_bytes=400),
                              ManualClock(NOW), high_watermark=hw, needs_recovery=True)
    assert again.producer_state.ongoing_txns() == want_ongoing
    assert again.last_stable_offset == want_lso
    assert again.collect_aborted_txns(0, again.log_end_offset) == want_aborted
    assert len(want_aborted) == 6
    # a clean close leaves a snapshot at the log end: nothing to replay next time
    again.close()
    assert os.path.exists(path / f"{again.log_end_offset:020d}.snapshot")
    third = PartitionLog.open(str(path), "t", 0, topic_config(segment_bytes=400),
                              ManualClock(NOW), high_watermark=hw)
    assert third.producer_state.ongoing_txns() == want_ongoing
    assert third.collect_aborted_txns(0, third.log_end_offset) == want_aborted
    third.close()


def test_follower_rebuilds_markers_from_replicated_batches(tmp_path):
    leader = open_log(tmp_path / "l-0")
    p = Producer(leader, 9)
    p.send(2)
    p.end(commit=False)
    p.send(1)
    data = leader.read(0, 1 << 20, leader.log_end_offset, True).slice.read()
    headers, pos = [], 0
    while pos < len(data):
        h = read_header(data, pos)
        headers.append(h)
        pos += h.size
    follower = open_log(tmp_path / "f-0")
    follower.append_as_follower(data, headers)
    replicate(follower)
    assert follower.collect_aborted_txns(0, 10) == [AbortedTxn(9, 0, 2, 3)]
    assert follower.last_stable_offset == 3  # the open transaction from offset 3


def test_snapshots_go_with_deleted_segments(tmp_path):
    plog = open_log(tmp_path / "t-0", segment_bytes=300, retention_bytes=1)
    p = Producer(plog, 3)
    for _ in range(15):
        p.send(2, transactional=False)
    replicate(plog)
    snaps = sorted(n for n in os.listdir(plog.dir) if n.endswith(".snapshot"))
    assert len(snaps) >= 2
    plog.delete_segments_for_retention()
    first = plog.segments[0].base_offset
    left = sorted(n for n in os.listdir(plog.dir) if n.endswith(".snapshot"))
    assert left and all(int(n.split(".")[0]) >= first for n in left)


def test_snapshots_are_forced_to_disk_before_and_after_their_rename(tmp_path, monkeypatch):
    plog = open_log(tmp_path / "t-0")
    Producer(plog, 3).send(2, transactional=False)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    plog.take_snapshot()
    snapshot = os.path.join(plog.dir, f"{plog.log_end_offset:020d}.snapshot")
    assert os.path.exists(snapshot)
    # the file's own data (under its temporary name), then the directory holding the rename
    assert synced == [snapshot + ".tmp", os.path.realpath(plog.dir)]


def test_a_roll_defers_the_snapshot_fsync_to_the_next_flush(tmp_path, monkeypatch):
    """At a roll (on the event loop) the snapshot is written and renamed without an
    fsync; the next flush, which runs off the loop, forces it and its directory, as
    Kafka's flush after a roll does."""
    plog = open_log(tmp_path / "t-0")
    Producer(plog, 3).send(2, transactional=False)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    plog.roll()
    snapshot = os.path.join(plog.dir, f"{plog.log_end_offset:020d}.snapshot")
    assert os.path.exists(snapshot) and synced == []
    assert plog.needs_flush()
    end, segments = plog.start_flush()
    plog.fsync_segments(segments)  # what the broker runs in its executor
    plog.flushed(end)
    assert snapshot in synced and os.path.realpath(plog.dir) in synced
    assert synced.index(snapshot) < synced.index(os.path.realpath(plog.dir))
    synced.clear()
    plog.fsync()  # nothing left to force but the segments
    assert snapshot not in synced
    plog.close()


def test_cleaner_drops_aborted_records_and_keeps_what_still_needs_markers(tmp_path):
    from strom.log.cleaner_manager import LogCleanerManager
    from strom.log.manager import LogManager
    from strom.log.records import decode_batch, iter_batches

    root = str(tmp_path / "data")
    clock = ManualClock(NOW)
    config = topic_config(cleanup_policy="compact", min_cleanable_dirty_ratio="0.01")
    logs = LogManager([root], clock, 1, "cluster")
    logs.prepare_dirs()
    logs.startup(lambda t: config, lambda t: None)
    plog = logs.get_or_create("t", 0, config, None)

    def send(pid, key, value, transactional=True):
        data = bytearray(build_batch([NewRecord(value, key=key, timestamp=NOW)],
                                     producer_id=pid, producer_epoch=0,
                                     base_sequence=plog.log_end_offset,
                                     is_transactional=transactional))
        plog.append_as_leader(data, read_header(data), 0)
        replicate(plog)

    send(1, b"K", b"committed")                 # 0
    plog.append_marker(1, 0, 0, True, 0)        # 1
    send(2, b"K", b"aborted")                   # 2
    plog.append_marker(2, 0, 0, False, 0)       # 3
    plog.roll()
    send(3, b"K", b"open")                      # 4: an open transaction
    plog.roll()
    send(4, b"Z", b"z", transactional=False)    # 5, active segment
    replicate(plog)
    manager = LogCleanerManager(logs, BrokerConfig({}), clock)
    result = manager.clean_once()
    assert result is not None and result.end_offset == 4  # stops at the open transaction
    kept, batches = [], []
    for seg in plog.segments:
        data = seg.read_bytes(0, seg.size)
        for b in (decode_batch(data, pos) for pos, _ in iter_batches(data)):
            batches.append((b.header.base_offset, len(b.records)))
            kept += [(b.header.is_control, r.offset, r.value) for r in b.records]
    # the aborted value does not hide the committed one, and is gone; its batch stays empty
    # (producer 2's state), so its marker and index entry stay, as does producer 1's
    # marker (its data is left)
    assert (False, 0, b"committed") in kept and not [r for r in kept if r[2] == b"aborted"]
    assert (2, 0) in batches
    assert [o for c, o, _ in kept if c] == [1, 3]
    assert plog.collect_aborted_txns(0, 6) == [AbortedTxn(2, 2, 3, 4)]
    # on disk too: the cleaned segment's .txnindex went through the swap with its files
    txn_file = os.path.join(plog.dir, f"{plog.segments[0].base_offset:020d}.txnindex")
    with open(txn_file, "rb") as f:
        assert decode_entries(f.read()) == [AbortedTxn(2, 2, 3, 4)]
    logs.shutdown()


def test_truncation_drops_aborted_entries_past_the_new_end(tmp_path):
    plog = open_log(tmp_path / "t-0", segment_bytes=300)
    p = Producer(plog, 5)
    for _ in range(4):
        p.send(2)
        p.end(commit=False)
    replicate(plog)
    assert len(plog.segments) > 1
    everything = plog.collect_aborted_txns(0, plog.log_end_offset)
    assert len(everything) == 4
    cut = everything[1].last_offset  # the second ABORT marker and what follows go
    plog.truncate_to(cut)
    assert plog.collect_aborted_txns(0, cut) == everything[:1]
    # the transaction whose marker was cut is open again
    assert plog.producer_state.ongoing_txns() == [(everything[1].first_offset, 5)]
    p.end(commit=True)
    plog.high_watermark = plog.log_end_offset
    assert plog.collect_aborted_txns(0, plog.log_end_offset) == everything[:1]
    assert plog.last_stable_offset == plog.log_end_offset


def test_v2_marker_at_the_bumped_epoch_and_ongoing_by_epoch(tmp_path):
    """Transactions V2: the marker carries epoch + 1, the producer goes on at that epoch
    from sequence 0; `has_ongoing_txn` by epoch tells a next-epoch batch apart from the
    transaction still open."""
    plog = open_log(tmp_path)
    p = Producer(plog, pid=9, epoch=3)
    p.send(2)
    state = plog.producer_state
    assert state.has_ongoing_txn(9) and state.has_ongoing_txn(9, 3)
    assert not state.has_ongoing_txn(9, 4)  # the next epoch's batch is not part of it
    p.end(True, epoch=4)
    assert not state.has_ongoing_txn(9)
    p.epoch, p.seq = 4, 0
    p.send(1)
    assert state.has_ongoing_txn(9, 4)
    p.end(False, epoch=5)
    replicate(plog)
    assert plog.last_stable_offset == plog.log_end_offset
