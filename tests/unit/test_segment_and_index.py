"""strom.log.index (OffsetIndex, TimeIndex) and strom.log.segment (LogSegment).

The index formats are pinned with golden bytes in Kafka's layout: `.index` entries are
(int32 lastOffset - base, int32 position of that batch), `.timeindex` entries are
(int64 max timestamp so far, int32 offset of that timestamp - base).
"""

from __future__ import annotations

import os
import struct

import pytest

from strom.log.index import CorruptIndexError, OffsetIndex, TimeIndex
from strom.log.records import NewRecord, build_batch, decode_batch
from strom.log.segment import LogSegment
from strom.protocol.batch import read_header

TS = 1_700_000_000_000
BASE = 100


def idx_bytes(*entries: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(">ii", rel, pos) for rel, pos in entries)


def tidx_bytes(*entries: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(">qi", ts, rel) for ts, rel in entries)


# --- OffsetIndex --------------------------------------------------------------------------


def test_offset_index_append_lookup_and_golden_bytes(tmp_path):
    path = str(tmp_path / "x.index")
    idx = OffsetIndex(path, BASE, max_index_size=1024)
    idx.append(103, 50)
    idx.append(107, 120)
    idx.append(110, 300)
    idx.append(109, 400)  # not increasing: ignored
    idx.append(110, 500)  # equal: ignored
    assert len(idx) == 3
    assert idx.lookup(99) == (BASE, 0)
    assert idx.lookup(102) == (BASE, 0)
    assert idx.lookup(103) == (103, 50)
    assert idx.lookup(106) == (103, 50)
    assert idx.lookup(107) == (107, 120)
    assert idx.lookup(10_000) == (110, 300)
    idx.flush()
    with open(path, "rb") as f:
        assert f.read() == idx_bytes((3, 50), (7, 120), (10, 300))


def test_offset_index_is_full(tmp_path):
    idx = OffsetIndex(str(tmp_path / "x.index"), 0, max_index_size=16)
    assert idx.max_entries == 2
    idx.append(1, 10)
    assert not idx.is_full
    idx.append(2, 20)
    assert idx.is_full


def test_offset_index_truncate_to_position_rewrites_file(tmp_path):
    path = str(tmp_path / "x.index")
    idx = OffsetIndex(path, BASE, 1024)
    for rel, pos in ((3, 50), (7, 120), (10, 300)):
        idx.append(BASE + rel, pos)
    idx.flush()
    idx.truncate_to_position(120)
    assert list(idx.relative_offsets) == [3]
    assert list(idx.positions) == [50]
    with open(path, "rb") as f:
        assert f.read() == idx_bytes((3, 50))
    idx.truncate_to_position(1000)  # nothing at or after: unchanged
    assert len(idx) == 1
    idx.reset()
    assert len(idx) == 0 and os.path.getsize(path) == 0


def test_offset_index_load_round_trip_and_preallocated_zeros(tmp_path):
    path = tmp_path / "x.index"
    path.write_bytes(idx_bytes((3, 50), (7, 120)) + bytes(8 * 3))
    idx = OffsetIndex(str(path), BASE, 1024)
    idx.load(log_size=1000)
    assert list(idx.relative_offsets) == [3, 7]
    assert list(idx.positions) == [50, 120]
    assert idx.lookup(108) == (107, 120)


def test_offset_index_missing_file_loads_empty(tmp_path):
    idx = OffsetIndex(str(tmp_path / "absent.index"), 0, 1024)
    idx.load(log_size=0)
    assert len(idx) == 0


@pytest.mark.parametrize("data, log_size", [
    pytest.param(idx_bytes((3, 50)) + b"\x00\x01\x02", 1000, id="not-a-multiple-of-8"),
    pytest.param(idx_bytes((7, 50), (3, 120)), 1000, id="offsets-decrease"),
    pytest.param(idx_bytes((3, 50), (3, 120)), 1000, id="offsets-repeat"),
    pytest.param(idx_bytes((3, 120), (7, 50)), 1000, id="positions-decrease"),
    pytest.param(idx_bytes((3, 50), (7, 1000)), 1000, id="position-beyond-log"),
    pytest.param(idx_bytes((-1, 50)), 1000, id="negative-offset"),
])
def test_offset_index_sanity_check(tmp_path, data, log_size):
    path = tmp_path / "x.index"
    path.write_bytes(data)
    with pytest.raises(CorruptIndexError):
        OffsetIndex(str(path), BASE, 1024).load(log_size)


# --- TimeIndex ----------------------------------------------------------------------------


def test_time_index_append_lookup_and_golden_bytes(tmp_path):
    path = str(tmp_path / "x.timeindex")
    idx = TimeIndex(path, BASE, 1200)
    assert idx.max_entries == 100
    assert idx.last_entry == (-1, BASE)
    idx.maybe_append(TS + 10, 102)
    idx.maybe_append(TS + 10, 104)  # same timestamp: ignored
    idx.maybe_append(TS + 5, 105)  # older timestamp: ignored
    idx.maybe_append(TS + 30, 108)
    assert len(idx) == 2
    assert idx.last_entry == (TS + 30, 108)
    # the last entry strictly below the target: a safe place to start scanning
    assert idx.lookup(TS) == BASE
    assert idx.lookup(TS + 10) == BASE
    assert idx.lookup(TS + 11) == 102
    assert idx.lookup(TS + 30) == 102
    assert idx.lookup(TS + 31) == 108
    idx.flush()
    with open(path, "rb") as f:
        assert f.read() == tidx_bytes((TS + 10, 2), (TS + 30, 8))


def test_time_index_truncate_and_load(tmp_path):
    path = str(tmp_path / "x.timeindex")
    idx = TimeIndex(path, BASE, 1200)
    idx.maybe_append(TS + 10, 102)
    idx.maybe_append(TS + 30, 108)
    idx.flush()
    loaded = TimeIndex(path, BASE, 1200)
    loaded.load()
    assert list(loaded.timestamps) == [TS + 10, TS + 30]
    assert list(loaded.relative_offsets) == [2, 8]
    loaded.truncate_to_offset(105)
    assert loaded.last_entry == (TS + 10, 102)
    with open(path, "rb") as f:
        assert f.read() == tidx_bytes((TS + 10, 2))


@pytest.mark.parametrize("data", [
    pytest.param(tidx_bytes((TS, 1)) + b"\x00" * 5, id="not-a-multiple-of-12"),
    pytest.param(tidx_bytes((TS + 5, 1), (TS, 2)), id="timestamps-decrease"),
    pytest.param(tidx_bytes((TS, 5), (TS + 5, 2)), id="offsets-decrease"),
])
def test_time_index_sanity_check(tmp_path, data):
    path = tmp_path / "x.timeindex"
    path.write_bytes(data)
    with pytest.raises(CorruptIndexError):
        TimeIndex(str(path), BASE, 1200).load()


# --- LogSegment ---------------------------------------------------------------------------


def make_batches(base: int = BASE, n: int = 3, per_batch: int = 2) -> list[bytes]:
    """`n` batches of `per_batch` records each, offsets assigned from `base`; record i
    (counting from 0 over all batches) has timestamp TS + i."""
    out = []
    for b in range(n):
        first = base + b * per_batch
        recs = [NewRecord(f"v{first + i}".encode(), key=b"k",
                          timestamp=TS + (first - base) + i) for i in range(per_batch)]
        out.append(build_batch(recs, base_offset=first))
    return out


def new_segment(tmp_path, interval: int = 0, max_index_size: int = 1024) -> LogSegment:
    return LogSegment(str(tmp_path), BASE, interval, max_index_size, created_ms=TS, create=True)


def fill(seg: LogSegment, batches: list[bytes]) -> list[int]:
    return [seg.append(b, read_header(b)) for b in batches]


def test_segment_files_are_named_by_20_digit_base_offset(tmp_path):
    seg = new_segment(tmp_path)
    seg.close()
    assert sorted(os.listdir(tmp_path)) == [
        "00000000000000000100.index", "00000000000000000100.log",
        "00000000000000000100.timeindex"]


def test_segment_append_tracks_offsets_and_writes_golden_indexes(tmp_path):
    batches = make_batches()
    sizes = [len(b) for b in batches]
    seg = new_segment(tmp_path, interval=0)
    positions = fill(seg, batches)
    assert positions == [0, sizes[0], sizes[0] + sizes[1]]
    assert seg.size == sum(sizes)
    assert seg.next_offset == BASE + 6
    assert seg.max_timestamp == TS + 5
    assert seg.offset_of_max_timestamp == BASE + 5
    seg.flush()
    assert (tmp_path / f"{BASE:020d}.log").read_bytes() == b"".join(batches)
    # The first batch is never indexed (nothing appended since the start); after that every
    # batch is (index.interval.bytes 0): its last offset and its position, as Kafka writes.
    assert (tmp_path / f"{BASE:020d}.index").read_bytes() == idx_bytes(
        (3, sizes[0]), (5, sizes[0] + sizes[1]))
    assert (tmp_path / f"{BASE:020d}.timeindex").read_bytes() == tidx_bytes(
        (TS + 3, 3), (TS + 5, 5))
    # rolling adds a final time index entry only if the max timestamp grew since
    seg.on_roll()
    assert (tmp_path / f"{BASE:020d}.timeindex").read_bytes() == tidx_bytes(
        (TS + 3, 3), (TS + 5, 5))
    seg.close()


def test_segment_index_interval_bytes_spaces_entries(tmp_path):
    batches = make_batches(n=4)
    size = len(batches[0])
    assert all(len(b) == size for b in batches)
    # an entry only once more than `interval` bytes were appended since the last one
    seg = new_segment(tmp_path, interval=size)
    fill(seg, batches)
    seg.flush()
    assert (tmp_path / f"{BASE:020d}.index").read_bytes() == idx_bytes((5, 2 * size))
    seg.close()


def test_segment_final_time_index_entry_on_roll(tmp_path):
    batches = make_batches(n=2)
    seg = new_segment(tmp_path, interval=1 << 20)  # no periodic entries
    fill(seg, batches)
    seg.on_roll()
    assert (tmp_path / f"{BASE:020d}.index").read_bytes() == b""
    assert (tmp_path / f"{BASE:020d}.timeindex").read_bytes() == tidx_bytes((TS + 3, 3))
    seg.close()


def test_segment_find_batch_and_read(tmp_path):
    batches = make_batches()
    sizes = [len(b) for b in batches]
    seg = new_segment(tmp_path, interval=0)
    fill(seg, batches)
    for offset, expected_base in ((99, 100), (100, 100), (101, 100), (102, 102), (103, 102),
                                  (105, 104)):
        bp = seg.find_batch(offset)
        assert bp is not None and bp.header.base_offset == expected_base
    assert seg.find_batch(106) is None

    everything = seg.read(100, max_bytes=1 << 20, max_offset=1 << 40, min_one=False)
    assert everything.position == 0 and everything.read() == b"".join(batches)
    # from the middle of a batch: the whole batch holding the offset comes back
    mid = seg.read(103, 1 << 20, 1 << 40, min_one=False)
    assert mid.position == sizes[0] and mid.read() == batches[1] + batches[2]
    # max_bytes: whole batches only
    two = seg.read(100, sizes[0] + sizes[1] + sizes[2] - 1, 1 << 40, min_one=False)
    assert two.size == sizes[0] + sizes[1]
    assert seg.read(100, 10, 1 << 40, min_one=False) is None
    one = seg.read(100, 10, 1 << 40, min_one=True)
    assert one.read() == batches[0]
    # max_offset is exclusive, on batch base offsets
    upto = seg.read(100, 1 << 20, max_offset=104, min_one=True)
    assert upto.read() == batches[0] + batches[1]
    assert seg.read(104, 1 << 20, max_offset=104, min_one=True) is None
    assert seg.read(106, 1 << 20, 1 << 40, min_one=True) is None
    seg.close()


def test_segment_truncate_to(tmp_path):
    batches = make_batches()
    sizes = [len(b) for b in batches]
    seg = new_segment(tmp_path, interval=0)
    fill(seg, batches)
    seg.flush()
    removed = seg.truncate_to(102)
    assert removed == sizes[1] + sizes[2]
    assert seg.size == sizes[0]
    assert seg.next_offset == 102
    assert seg.max_timestamp == TS + 1
    assert (tmp_path / f"{BASE:020d}.log").read_bytes() == batches[0]
    assert (tmp_path / f"{BASE:020d}.index").read_bytes() == b""
    assert (tmp_path / f"{BASE:020d}.timeindex").read_bytes() == b""
    # appending continues after the truncation point
    again = make_batches(base=102, n=1)[0]
    assert seg.append(again, read_header(again)) == sizes[0]
    assert seg.next_offset == 104
    assert seg.truncate_to(500) == 0
    seg.close()


def test_segment_truncate_to_zero(tmp_path):
    seg = new_segment(tmp_path, interval=0)
    fill(seg, make_batches())
    seg.truncate_to(BASE)
    assert seg.size == 0 and seg.next_offset == BASE and seg.max_timestamp == -1
    seg.close()


def test_segment_reopen_loads_indexes_and_tail_state(tmp_path):
    batches = make_batches(n=4)
    seg = new_segment(tmp_path, interval=0)
    fill(seg, batches)
    seg.close()
    index_before = (tmp_path / f"{BASE:020d}.index").read_bytes()
    again = LogSegment(str(tmp_path), BASE, 0, 1024, created_ms=TS, create=False)
    assert again.load_indexes() is False  # trusted, not rebuilt
    assert again.next_offset == BASE + 8
    assert again.max_timestamp == TS + 7
    assert again.offset_of_max_timestamp == BASE + 7
    assert again.first_batch_timestamp == TS + 1
    assert (tmp_path / f"{BASE:020d}.index").read_bytes() == index_before
    assert again.find_batch(105).header.base_offset == 104
    again.close()


def test_segment_recover_truncates_torn_tail_and_rebuilds_indexes(tmp_path):
    batches = make_batches()
    sizes = [len(b) for b in batches]
    seg = new_segment(tmp_path, interval=0)
    fill(seg, batches)
    seg.close()
    log_path = tmp_path / f"{BASE:020d}.log"
    with open(log_path, "ab") as f:
        f.write(make_batches(base=106, n=1)[0][:40])  # half a batch
    (tmp_path / f"{BASE:020d}.index").write_bytes(b"garbage")
    again = LogSegment(str(tmp_path), BASE, 0, 1024, created_ms=TS, create=False)
    assert again.recover() == 40
    assert again.size == sum(sizes)
    assert again.next_offset == BASE + 6
    assert log_path.read_bytes() == b"".join(batches)
    assert (tmp_path / f"{BASE:020d}.index").read_bytes() == idx_bytes(
        (3, sizes[0]), (5, sizes[0] + sizes[1]))
    assert (tmp_path / f"{BASE:020d}.timeindex").read_bytes() == tidx_bytes(
        (TS + 3, 3), (TS + 5, 5))
    again.close()


def test_segment_recover_stops_at_crc_mismatch(tmp_path):
    batches = make_batches()
    seg = new_segment(tmp_path, interval=0)
    fill(seg, batches)
    seg.close()
    log_path = tmp_path / f"{BASE:020d}.log"
    data = bytearray(log_path.read_bytes())
    data[len(batches[0]) + 70] ^= 0xFF  # inside the records of the second batch
    log_path.write_bytes(bytes(data))
    again = LogSegment(str(tmp_path), BASE, 0, 1024, created_ms=TS, create=False)
    assert again.recover() == len(batches[1]) + len(batches[2])
    assert again.next_offset == BASE + 2
    assert log_path.read_bytes() == batches[0]
    assert [r.value for r in decode_batch(log_path.read_bytes()).records] == [b"v100", b"v101"]
    again.close()


def test_segment_load_indexes_rebuilds_a_corrupt_index(tmp_path):
    batches = make_batches()
    sizes = [len(b) for b in batches]
    seg = new_segment(tmp_path, interval=0)
    fill(seg, batches)
    seg.close()
    (tmp_path / f"{BASE:020d}.index").write_bytes(idx_bytes((5, 10), (3, 20)))
    again = LogSegment(str(tmp_path), BASE, 0, 1024, created_ms=TS, create=False)
    assert again.load_indexes() is True
    assert (tmp_path / f"{BASE:020d}.index").read_bytes() == idx_bytes(
        (3, sizes[0]), (5, sizes[0] + sizes[1]))
    assert again.next_offset == BASE + 6
    again.close()


def test_segment_rename_to_deleted_and_delete(tmp_path):
    seg = new_segment(tmp_path, interval=0)
    batches = make_batches()
    fill(seg, batches)
    seg.flush()
    seg.rename_to_deleted()
    assert sorted(os.listdir(tmp_path)) == [
        "00000000000000000100.index.deleted", "00000000000000000100.log.deleted",
        "00000000000000000100.timeindex.deleted"]
    # an open fd keeps reading for fetches in flight
    assert seg.read(100, 1 << 20, 1 << 40, True).read() == b"".join(batches)
    seg.delete()
    assert os.listdir(tmp_path) == []
