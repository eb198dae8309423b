"""The tail map of a segment (strom.log.segment.TailBatches): reads at or near the end of a
segment find their batches without scanning the file, and must return exactly what the
index-and-scan path returns, after appends, truncation, recovery and a reopen."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.log import segment as segment_module
from strom.log.records import NewRecord, build_batch
from strom.log.segment import CorruptBatch, LogSegment
from strom.protocol.batch import read_header

TS = 1_700_000_000_000


def scan_read(seg: LogSegment, offset: int, max_bytes: int, max_offset: int, min_one: bool):
    """What `read` returns, computed the slow way: every batch header from position 0."""
    batches = list(seg.batches(0))
    first = next((bp for bp in batches if bp.header.last_offset >= offset), None)
    if first is None or first.header.base_offset >= max_offset:
        return None
    size = 0
    for bp in batches:
        if bp.position < first.position:
            continue
        if bp.header.base_offset >= max_offset:
            break
        if size + bp.header.size > max_bytes and (size or not min_one):
            break
        size += bp.header.size
    return (first.position, size) if size else None


def append(seg: LogSegment, offset: int, count: int, value_size: int) -> int:
    data = build_batch([NewRecord(b"v" * value_size, timestamp=TS + offset + i)
                        for i in range(count)], base_offset=offset)
    seg.append(data, read_header(data))
    return offset + count


def check(seg, end, queries):
    for q_offset, max_bytes, max_offset_delta, min_one in queries:
        offset = q_offset % (end + 2)
        max_offset = min(end, offset + max_offset_delta)
        got = seg.read(offset, max_bytes, max_offset, min_one)
        if got is not None:  # bytes read with the header check are the file's bytes
            assert got.read() == os.pread(seg.fd, got.size, got.position)
        got = None if got is None else (got.position, got.size)
        assert got == scan_read(seg, offset, max_bytes, max_offset, min_one), \
            (offset, max_bytes, max_offset, min_one)
        bp = seg.find_batch(offset)
        ref = next((b for b in seg.batches(0) if b.header.last_offset >= offset), None)
        assert (bp and bp.position) == (ref and ref.position)


batches_st = st.lists(st.tuples(st.integers(1, 5), st.integers(0, 300)), min_size=1,
                      max_size=60)
queries_st = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3000),
                                st.integers(0, 40), st.booleans()), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(batches=batches_st, queries=queries_st, interval=st.sampled_from([0, 200, 4096]),
       cut=st.integers(0, 400))
def test_tail_reads_match_the_scan(tmp_path_factory, batches, queries, interval, cut):
    d = str(tmp_path_factory.mktemp("seg"))
    seg = LogSegment(d, 0, interval, 1 << 20, TS, create=True)
    end = 0
    for count, size in batches:
        end = append(seg, end, count, size)
    check(seg, end, queries)
    # truncation re-derives the map from the last index entry left
    seg.truncate_to(cut % (end + 1))
    end = seg.next_offset
    check(seg, end, queries)
    end = append(seg, end, 2, 10)
    check(seg, end, queries)
    # a reopened segment builds the map from its index; a recovered one from every batch
    seg.close()
    seg = LogSegment(d, 0, interval, 1 << 20, TS)
    seg.load_indexes()
    check(seg, end, queries)
    seg.recover()
    check(seg, end, queries)
    seg.close()


def test_map_keeps_only_the_newest_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(segment_module, "MAX_TAIL_BATCHES", 8)
    seg = LogSegment(str(tmp_path), 0, 1 << 30, 1 << 20, TS, create=True)  # no index entry
    end = 0
    for _ in range(21):
        end = append(seg, end, 1, 5)
    assert len(seg.tail.starts) <= 8
    assert not seg.tail.covers(0) and seg.tail.covers(end - 1)
    check(seg, end, [(o, 10_000, 30, True) for o in range(end + 1)] +
          [(o, 1, 30, False) for o in range(end + 1)])
    seg.close()


def test_index_entries_keep_the_map_and_a_roll_drops_it(tmp_path):
    seg = LogSegment(str(tmp_path), 0, 0, 1 << 20, TS, create=True)  # an entry per batch
    end = 0
    for _ in range(5):
        end = append(seg, end, 2, 5)
    assert len(seg.index) >= 4 and len(seg.tail.starts) == 5 and seg.tail.covers(0)
    seg.on_roll()
    assert not seg.tail.covers(0)
    check(seg, end, [(o, 10_000, 30, True) for o in range(end + 1)])
    seg.close()


def test_a_small_tail_read_is_one_pread_checked_against_the_map(tmp_path, monkeypatch):
    """A small hot slice comes back with its bytes (read in the same pread as the header
    check); a file that no longer holds what the map says, or ends early, is CorruptBatch
    (the fetch answers CORRUPT_MESSAGE), never a slice shorter than its size."""
    seg = LogSegment(str(tmp_path), 0, 1 << 30, 1 << 20, TS, create=True)
    end = 0
    for _ in range(3):
        end = append(seg, end, 2, 20)
    preads = []
    real_pread = os.pread
    monkeypatch.setattr(segment_module.os, "pread",
                        lambda fd, n, pos: preads.append(n) or real_pread(fd, n, pos))
    got = seg.read(2, 1 << 20, end, True)
    assert got.data == real_pread(seg.fd, got.size, got.position) and len(preads) == 1
    # a large slice is left to the connection (sendfile): only its header is read here
    monkeypatch.setattr(segment_module, "PREREAD_MAX_BYTES", 10)
    preads.clear()
    got = seg.read(2, 1 << 20, end, True)
    assert got.data is None and preads == [segment_module.HEADER_SIZE]
    monkeypatch.setattr(segment_module, "PREREAD_MAX_BYTES", 1 << 16)
    # the file ends before the mapped batches do (cut by something else than strom)
    os.ftruncate(seg.fd, seg.size - 5)
    with pytest.raises(CorruptBatch, match="the file has"):
        seg.read(4, 1 << 20, end, True)
    # another batch where the map says one was appended
    first = real_pread(seg.fd, segment_module.HEADER_SIZE, 0)
    fd = os.open(seg.log_path, os.O_WRONLY)  # the segment's own descriptor appends
    os.pwrite(fd, first, seg.tail.starts[1])
    os.close(fd)
    with pytest.raises(CorruptBatch, match="where offset 2"):
        seg.read(2, 1 << 20, 4, True)
    seg.close()
