"""strom.log.partition_log.PartitionLog: offsets, rolling, reads, timestamps, leader epochs,
truncation and retention."""

from __future__ import annotations

import os

import pytest

from strom.clock import ManualClock
from strom.config import BrokerConfig, TopicConfig, validate_topic_configs
from strom.log.partition_log import PartitionLog
from strom.log.records import Compression, NewRecord, TimestampType, build_batch, decode_batch
from strom.protocol.batch import read_header
from strom.protocol.errors import ErrorCode, OffsetOutOfRange

NOW = 1_700_000_000_000


def topic_config(**overrides: object) -> TopicConfig:
    """A TopicConfig with overrides given as segment_bytes=... for segment.bytes."""
    raw = {k.replace("_", "."): str(v) for k, v in overrides.items()}
    return TopicConfig(BrokerConfig({}), validate_topic_configs(raw))


def open_log(tmp_path, clock=None, **overrides) -> PartitionLog:
    return PartitionLog.open(str(tmp_path / "t-0"), "t", 0, topic_config(**overrides),
                             clock or ManualClock(NOW))


def append(plog: PartitionLog, values=(b"v",), timestamps=None, epoch: int = 0,
           compression=Compression.NONE, **kw):
    ts = timestamps or [plog.clock.now_ms()] * len(values)
    data = bytearray(build_batch([NewRecord(v, key=b"k", timestamp=t)
                                  for v, t in zip(values, ts, strict=True)],
                                 compression=compression, **kw))
    return plog.append_as_leader(data, read_header(data), epoch)


def log_files(plog: PartitionLog, suffix: str = ".log") -> list[str]:
    return sorted(n for n in os.listdir(plog.dir) if n.endswith(suffix))


def read_all(plog: PartitionLog, offset: int = 0) -> list[tuple[int, bytes]]:
    """(offset, value) of every record from `offset` to the log end, segment by segment."""
    out = []
    while offset < plog.log_end_offset:
        res = plog.read(offset, 1 << 20, plog.log_end_offset, min_one=True)
        assert res.slice is not None
        data = res.slice.read()
        pos = 0
        while pos < len(data):
            batch = decode_batch(data, pos)
            out += [(r.offset, r.value) for r in batch.records]
            pos += batch.header.size
            offset = batch.header.last_offset + 1
    return out


# --- appending and rolling ----------------------------------------------------------------


def test_append_assigns_offsets_and_patches_the_batch(tmp_path):
    plog = open_log(tmp_path)
    assert (plog.log_start_offset, plog.log_end_offset) == (0, 0)
    r1 = append(plog, [b"a", b"b", b"c"], epoch=4)
    r2 = append(plog, [b"d"], epoch=4)
    assert (r1.base_offset, r1.last_offset, r1.log_append_time, r1.duplicate) == (0, 2, -1, False)
    assert (r2.base_offset, r2.last_offset) == (3, 3)
    assert plog.log_end_offset == 4
    data = plog.read(0, 1 << 20, 4, True).slice.read()
    first = decode_batch(data)  # the CRC still holds after patching
    assert first.header.base_offset == 0 and first.header.partition_leader_epoch == 4
    second = decode_batch(data, first.header.size)
    assert second.header.base_offset == 3
    assert read_all(plog) == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]
    assert log_files(plog) == ["00000000000000000000.log"]
    plog.close()


def test_roll_on_segment_bytes(tmp_path):
    plog = open_log(tmp_path, segment_bytes=200)
    size = None
    for i in range(6):
        r = append(plog, [b"x" * 10])
        size = size or plog.size_in_bytes
        assert r.base_offset == i
    assert 2 * size <= 200 < 3 * size  # two batches fit a segment
    assert log_files(plog) == ["00000000000000000000.log", "00000000000000000002.log",
                               "00000000000000000004.log"]
    assert log_files(plog, ".index") == [n.replace(".log", ".index") for n in log_files(plog)]
    assert log_files(plog, ".timeindex") == [n.replace(".log", ".timeindex")
                                             for n in log_files(plog)]
    assert [s.base_offset for s in plog.segments] == [0, 2, 4]
    assert all(s.size <= 200 for s in plog.segments)
    assert [o for o, _ in read_all(plog)] == list(range(6))
    plog.close()


def test_roll_on_segment_ms(tmp_path):
    clock = ManualClock(NOW)
    plog = open_log(tmp_path, clock, segment_ms=1000)
    append(plog)
    clock.advance(1000)
    append(plog)  # not yet more than segment.ms
    assert len(plog.segments) == 1
    clock.advance(1)
    r = append(plog)
    assert r.base_offset == 2
    assert log_files(plog) == ["00000000000000000000.log", "00000000000000000002.log"]
    clock.advance(500)
    append(plog)
    assert len(plog.segments) == 2
    plog.close()


def test_segment_ms_counts_record_time_not_wall_time(tmp_path):
    # As Kafka: a segment spans record timestamps from its first batch; old timestamps
    # arriving late do not roll, and a restart does not reset the span.
    clock = ManualClock(NOW)
    plog = open_log(tmp_path, clock, segment_ms=1000)
    append(plog, timestamps=[NOW])
    clock.advance(5000)
    append(plog, timestamps=[NOW + 500])
    assert len(plog.segments) == 1
    append(plog, timestamps=[NOW + 1001])
    assert [s.base_offset for s in plog.segments] == [0, 2]
    plog.close()


def test_roll_when_an_index_is_full(tmp_path):
    # 24 bytes: 3 offset index entries (8 bytes) but only 2 time index entries (12 bytes);
    # with index.interval.bytes 0 every batch after the first adds one of each.
    plog = open_log(tmp_path, segment_index_bytes=24, index_interval_bytes=0)
    for i in range(7):
        append(plog, timestamps=[NOW + i])
    assert [s.base_offset for s in plog.segments] == [0, 3, 6]
    assert [len(s.time_index) for s in plog.segments[:2]] == [2, 2]
    assert [len(s.index) for s in plog.segments[:2]] == [2, 2]


def test_roll_when_the_offset_index_is_full(tmp_path):
    # equal timestamps add no time index entries: the offset index (3 entries) fills first
    plog = open_log(tmp_path, segment_index_bytes=24, index_interval_bytes=0)
    for _ in range(7):
        append(plog, timestamps=[NOW])
    assert [s.base_offset for s in plog.segments] == [0, 4]
    assert len(plog.segments[0].index) == 3
    plog.close()


def test_empty_active_segment_never_rolls(tmp_path):
    plog = open_log(tmp_path)
    assert plog.roll() is plog.active_segment
    append(plog)
    plog.roll()
    plog.roll()
    assert [s.base_offset for s in plog.segments] == [0, 1]
    plog.close()


# --- reading ------------------------------------------------------------------------------


def test_read_max_bytes_min_one_and_max_offset(tmp_path):
    plog = open_log(tmp_path)
    for i in range(4):
        append(plog, [b"%d" % i])
    size = plog.size_in_bytes // 4
    leo = plog.log_end_offset
    assert plog.read(0, 2 * size + 1, leo, False).slice.size == 2 * size
    assert plog.read(0, 1, leo, False).slice is None
    one = plog.read(0, 1, leo, True)
    assert one.slice.size == size
    assert (one.log_start_offset, one.log_end_offset) == (0, 4)
    # the high watermark bounds what a consumer sees
    hw = plog.read(1, 1 << 20, 3, True)
    assert hw.slice.size == 2 * size
    assert [r.offset for r in decode_batch(hw.slice.read(), size).records] == [2]
    assert plog.read(3, 1 << 20, 3, True).slice is None
    assert plog.read(4, 1 << 20, 4, True).slice is None  # at the log end: empty, no error
    plog.close()


def test_read_out_of_range(tmp_path):
    plog = open_log(tmp_path)
    append(plog, [b"a", b"b"])
    with pytest.raises(OffsetOutOfRange) as e:
        plog.read(3, 1 << 20, 2, True)
    assert e.value.code == ErrorCode.offset_out_of_range
    with pytest.raises(OffsetOutOfRange):
        plog.read(-1, 1 << 20, 2, True)
    plog.close()


def test_read_below_log_start_after_retention(tmp_path):
    clock = ManualClock(NOW)
    plog = open_log(tmp_path, clock, segment_bytes=100, retention_ms=1000)
    for ts in (NOW, NOW, NOW + 5000):  # the active segment's batch is not expired
        append(plog, [b"x" * 20], [ts])
    plog.high_watermark = plog.log_end_offset
    clock.advance(2000)
    assert plog.delete_segments_for_retention() == 2
    assert plog.log_start_offset == 2
    with pytest.raises(OffsetOutOfRange):
        plog.read(1, 1 << 20, 3, True)
    assert read_all(plog, 2) == [(2, b"x" * 20)]
    plog.close()


def test_read_continues_in_the_next_segment(tmp_path):
    plog = open_log(tmp_path, segment_bytes=100)
    for i in range(3):
        append(plog, [b"%02d" % i + b"x" * 20])
    assert len(plog.segments) == 3
    res = plog.read(1, 1 << 20, 3, True)  # one segment's batches at a time
    assert [r.offset for r in decode_batch(res.slice.read()).records] == [1]
    assert [o for o, _ in read_all(plog)] == [0, 1, 2]
    plog.close()


# --- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [0, 4096])
def test_offset_for_timestamp_uncompressed_and_compressed(tmp_path, interval):
    plog = open_log(tmp_path, segment_bytes=150, index_interval_bytes=interval)
    append(plog, [b"a", b"b", b"c"], [NOW + 100, NOW + 300, NOW + 200])  # 0-2
    append(plog, [b"d", b"e", b"f"], [NOW + 250, NOW + 400, NOW + 500],
           compression=Compression.GZIP)  # 3-5
    append(plog, [b"g"], [NOW + 450], compression=Compression.LZ4)  # 6
    append(plog, [b"h", b"i"], [NOW + 600, NOW + 700], compression=Compression.ZSTD)  # 7-8
    assert len(plog.segments) > 1
    leo = plog.log_end_offset
    assert plog.offset_for_timestamp(0, leo) == (0, NOW + 100)
    assert plog.offset_for_timestamp(NOW + 100, leo) == (0, NOW + 100)
    assert plog.offset_for_timestamp(NOW + 150, leo) == (1, NOW + 300)
    assert plog.offset_for_timestamp(NOW + 300, leo) == (1, NOW + 300)
    assert plog.offset_for_timestamp(NOW + 301, leo) == (4, NOW + 400)
    assert plog.offset_for_timestamp(NOW + 401, leo) == (5, NOW + 500)
    assert plog.offset_for_timestamp(NOW + 501, leo) == (7, NOW + 600)
    assert plog.offset_for_timestamp(NOW + 650, leo) == (8, NOW + 700)
    assert plog.offset_for_timestamp(NOW + 701, leo) is None
    # nothing at or beyond max_offset (the high watermark) is returned
    assert plog.offset_for_timestamp(NOW + 401, 5) is None
    assert plog.offset_for_timestamp(NOW + 301, 5) == (4, NOW + 400)
    assert plog.max_timestamp_offset(leo) == (8, NOW + 700)
    assert plog.max_timestamp_offset(7) == (5, NOW + 500)
    assert plog.max_timestamp_offset(3) == (1, NOW + 300)
    assert plog.max_timestamp_offset(0) is None
    plog.close()


def test_offset_for_timestamp_respects_log_start(tmp_path):
    plog = open_log(tmp_path, segment_bytes=100)
    for i in range(3):
        append(plog, [b"x" * 20], [NOW + i])
    plog.log_start_offset = 1
    assert plog.offset_for_timestamp(0, 3) == (1, NOW + 1)
    plog.close()


def test_max_timestamp_offset_first_of_equal_timestamps(tmp_path):
    plog = open_log(tmp_path)
    append(plog, [b"a", b"b", b"c"], [NOW + 5, NOW + 9, NOW + 9])
    append(plog, [b"d"], [NOW + 9])
    assert plog.max_timestamp_offset(plog.log_end_offset) == (1, NOW + 9)
    plog.close()


def test_log_append_time_topic(tmp_path):
    clock = ManualClock(NOW)
    plog = open_log(tmp_path, clock, message_timestamp_type="LogAppendTime")
    old = NOW - 10_000_000
    r1 = append(plog, [b"a", b"b"], [old, old + 1])
    assert r1.log_append_time == NOW
    clock.advance(100)
    r2 = append(plog, [b"c"], [old + 2], compression=Compression.SNAPPY)
    assert r2.log_append_time == NOW + 100
    data = plog.read(0, 1 << 20, 3, True).slice.read()
    first = decode_batch(data)  # verifies the recomputed CRC
    assert first.header.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert first.header.max_timestamp == NOW
    assert [r.timestamp for r in first.records] == [NOW, NOW]
    second = decode_batch(data, first.header.size)
    assert [r.timestamp for r in second.records] == [NOW + 100]
    assert plog.offset_for_timestamp(old, 3) == (0, NOW)
    assert plog.offset_for_timestamp(NOW + 1, 3) == (2, NOW + 100)
    assert plog.offset_for_timestamp(NOW + 101, 3) is None
    assert plog.max_timestamp_offset(3) == (2, NOW + 100)
    plog.close()


# --- leader epochs ------------------------------------------------------------------------


def test_leader_epoch_checkpoint(tmp_path):
    plog = open_log(tmp_path)
    path = os.path.join(plog.dir, "leader-epoch-checkpoint")
    append(plog, [b"a", b"b"], epoch=0)
    with open(path) as f:
        assert f.read() == "0\n1\n0 0\n"
    append(plog, epoch=0)
    append(plog, epoch=3)  # offset 3
    append(plog, epoch=3)
    append(plog, epoch=5)  # offset 5
    with open(path) as f:
        assert f.read() == "0\n3\n0 0\n3 3\n5 5\n"
    assert plog.latest_epoch == 5
    assert plog.end_offset_for_epoch(0) == (0, 3)
    assert plog.end_offset_for_epoch(4) == (3, 5)
    assert plog.end_offset_for_epoch(5) == (5, 6)
    plog.close()
    again = PartitionLog.open(plog.dir, "t", 0, topic_config(), ManualClock(NOW))
    assert again.leader_epochs == [(0, 0), (3, 3), (5, 5)]
    again.close()


def test_end_offset_for_epoch_with_no_epochs(tmp_path):
    plog = open_log(tmp_path)
    assert plog.end_offset_for_epoch(-1) == (-1, -1)
    assert plog.end_offset_for_epoch(0) == (-1, -1)
    assert plog.end_offset_for_epoch(3) == (-1, -1)
    plog.close()


def test_end_offset_for_epoch_with_gaps(tmp_path):
    """As Kafka's LeaderEpochFileCache.endOffsetFor, epochs (2, 0), (4, 3), (7, 5), LEO 8."""
    plog = open_log(tmp_path)
    append(plog, [b"a", b"b", b"c"], epoch=2)  # 0-2
    append(plog, [b"d", b"e"], epoch=4)  # 3-4
    append(plog, [b"f"], epoch=7)  # 5
    append(plog, [b"g", b"h"], epoch=7)  # 6-7
    assert plog.leader_epochs == [(2, 0), (4, 3), (7, 5)]
    assert plog.log_end_offset == 8
    # the latest epoch ends at the log end offset
    assert plog.end_offset_for_epoch(7) == (7, 8)
    # a cached epoch ends where the next cached one starts
    assert plog.end_offset_for_epoch(2) == (2, 3)
    assert plog.end_offset_for_epoch(4) == (4, 5)
    # an epoch in a gap: the largest epoch below it, ending where the next one starts
    assert plog.end_offset_for_epoch(3) == (2, 3)
    assert plog.end_offset_for_epoch(5) == (4, 5)
    assert plog.end_offset_for_epoch(6) == (4, 5)
    # below the first epoch: the requested epoch, ending where the first one starts
    assert plog.end_offset_for_epoch(0) == (0, 0)
    assert plog.end_offset_for_epoch(1) == (1, 0)
    # UNDEFINED_EPOCH, and an epoch above the latest: undefined
    assert plog.end_offset_for_epoch(-1) == (-1, -1)
    assert plog.end_offset_for_epoch(8) == (-1, -1)
    assert plog.end_offset_for_epoch(100) == (-1, -1)
    plog.close()


def test_end_offset_for_epoch_of_a_new_leader_before_it_appends(tmp_path):
    plog = open_log(tmp_path)
    append(plog, [b"a", b"b"], epoch=0)
    plog.assign_epoch_start(1, plog.log_end_offset)
    assert plog.end_offset_for_epoch(0) == (0, 2)
    assert plog.end_offset_for_epoch(1) == (1, 2)
    append(plog, [b"c"], epoch=1)
    assert plog.end_offset_for_epoch(1) == (1, 3)
    assert plog.end_offset_for_epoch(0) == (0, 2)
    plog.close()


def test_end_offset_for_epoch_after_truncation(tmp_path):
    plog = open_log(tmp_path)
    append(plog, [b"a", b"b"], epoch=1)  # 0-1
    append(plog, [b"c", b"d"], epoch=3)  # 2-3
    plog.truncate_to(2)  # epoch 3's entries are gone: epoch 1 is the latest again
    assert plog.leader_epochs == [(1, 0)]
    assert plog.end_offset_for_epoch(1) == (1, 2)
    assert plog.end_offset_for_epoch(3) == (-1, -1)
    plog.close()


# --- truncation ---------------------------------------------------------------------------


def test_truncate_to_across_segments(tmp_path):
    plog = open_log(tmp_path, segment_bytes=100)
    for i in range(6):
        append(plog, [b"%02d" % i + b"x" * 20], epoch=i // 2)
    assert len(plog.segments) == 6
    plog.high_watermark = 5
    plog.truncate_to(3)
    assert plog.log_end_offset == 3
    assert plog.high_watermark == 3
    assert log_files(plog) == ["00000000000000000000.log", "00000000000000000001.log",
                               "00000000000000000002.log"]
    assert log_files(plog, ".index") == [n.replace(".log", ".index") for n in log_files(plog)]
    assert plog.leader_epochs == [(0, 0), (1, 2)]
    with open(os.path.join(plog.dir, "leader-epoch-checkpoint")) as f:
        assert f.read() == "0\n2\n0 0\n1 2\n"
    r = append(plog, [b"new"], epoch=7)
    assert r.base_offset == 3
    assert read_all(plog)[-1] == (3, b"new")
    assert [o for o, _ in read_all(plog)] == [0, 1, 2, 3]
    plog.truncate_to(10)  # beyond the end: nothing
    assert plog.log_end_offset == 4
    plog.close()


def test_truncate_to_within_the_active_segment(tmp_path):
    plog = open_log(tmp_path)
    for i in range(4):
        append(plog, [b"%d" % i])
    plog.truncate_to(2)
    assert plog.log_end_offset == 2
    assert read_all(plog) == [(0, b"0"), (1, b"1")]
    assert append(plog).base_offset == 2
    plog.close()


# --- retention ----------------------------------------------------------------------------


def five_segments(tmp_path, clock, **overrides) -> PartitionLog:
    """Five one-batch segments (offsets 0..4), the last one active; batch i has timestamp
    NOW + 1000 * i."""
    plog = open_log(tmp_path, clock, segment_bytes=100, **overrides)
    for i in range(5):
        append(plog, [b"x" * 20], [NOW + 1000 * i])
    assert [s.base_offset for s in plog.segments] == [0, 1, 2, 3, 4]
    return plog


def test_retention_ms_deletes_expired_closed_segments(tmp_path):
    clock = ManualClock(NOW)
    plog = five_segments(tmp_path, clock, retention_ms=10_000)
    plog.high_watermark = plog.log_end_offset
    assert plog.delete_segments_for_retention() == 0
    clock.advance(11_500)  # batches 0 and 1 are older than 10 s
    assert plog.delete_segments_for_retention() == 2
    assert plog.log_start_offset == 2
    assert [s.base_offset for s in plog.segments] == [2, 3, 4]
    names = sorted(os.listdir(plog.dir))
    for base in (0, 1):
        for suffix in (".log", ".index", ".timeindex"):
            assert f"{base:020d}{suffix}.deleted" in names
            assert f"{base:020d}{suffix}" not in names
    retired = plog.take_retired()
    assert [s.base_offset for s in retired] == [0, 1]
    assert plog.take_retired() == []
    for seg in retired:
        seg.delete()
    assert not [n for n in os.listdir(plog.dir) if n.endswith(".deleted")]
    clock.advance(100_000)  # everything expired, the active segment too (as Kafka): a
    # new empty segment is rolled at the log end, and the data of the idle log is gone
    assert plog.delete_segments_for_retention() == 3
    assert [s.base_offset for s in plog.segments] == [5]
    assert plog.log_start_offset == 5
    assert plog.log_end_offset == 5
    assert read_all(plog, 5) == []
    assert f"{5:020d}.log" in os.listdir(plog.dir)
    assert plog.delete_segments_for_retention() == 0  # an empty active segment stays
    assert append(plog).base_offset == 5
    plog.close()


def test_retention_keeps_an_active_segment_with_unreplicated_data(tmp_path):
    clock = ManualClock(NOW)
    plog = five_segments(tmp_path, clock, retention_ms=1000)
    plog.high_watermark = 4  # the active segment's batch (offset 4) is not replicated
    clock.advance(100_000)
    assert plog.delete_segments_for_retention() == 4
    assert [s.base_offset for s in plog.segments] == [4]
    assert read_all(plog, 4) == [(4, b"x" * 20)]
    plog.close()


def test_retention_never_deletes_beyond_the_high_watermark(tmp_path):
    clock = ManualClock(NOW)
    plog = five_segments(tmp_path, clock, retention_ms=1000)
    clock.advance(100_000)
    plog.high_watermark = 0
    assert plog.delete_segments_for_retention() == 0
    plog.high_watermark = 2  # segments 0 and 1 end at or below it
    assert plog.delete_segments_for_retention() == 2
    assert plog.log_start_offset == 2
    plog.high_watermark = 3
    assert plog.delete_segments_for_retention() == 1
    assert plog.log_start_offset == 3
    plog.close()


def test_retention_bytes(tmp_path):
    clock = ManualClock(NOW)
    plog = five_segments(tmp_path, clock)
    plog.high_watermark = plog.log_end_offset
    size = plog.segments[0].size
    assert plog.size_in_bytes == 5 * size
    plog.config = topic_config(segment_bytes=100, retention_bytes=3 * size)
    # 5 segments, 3 allowed: the two oldest go
    assert plog.delete_segments_for_retention() == 2
    assert plog.size_in_bytes == 3 * size
    assert plog.log_start_offset == 2
    plog.config = topic_config(segment_bytes=100, retention_bytes=0)
    # the active segment breaches retention.bytes too: a new one is rolled (as Kafka)
    assert plog.delete_segments_for_retention() == 3
    assert [s.base_offset for s in plog.segments] == [5]
    assert plog.log_start_offset == 5
    plog.close()


def test_retention_bytes_keeps_a_partial_excess(tmp_path):
    clock = ManualClock(NOW)
    plog = five_segments(tmp_path, clock)
    plog.high_watermark = plog.log_end_offset
    size = plog.segments[0].size
    plog.config = topic_config(segment_bytes=100, retention_bytes=4 * size - 1)
    # deleting one segment brings the log to 4 * size > retention.bytes, but deleting a
    # second would remove more than the excess (size + 1): Kafka deletes while
    # size - segment >= retention.bytes, so exactly one goes.
    assert plog.delete_segments_for_retention() == 1
    assert plog.log_start_offset == 1
    plog.close()


def test_compact_only_topic_is_not_deleted_by_retention(tmp_path):
    clock = ManualClock(NOW)
    plog = five_segments(tmp_path, clock, retention_ms=1000, cleanup_policy="compact")
    plog.high_watermark = plog.log_end_offset
    clock.advance(100_000)
    assert plog.delete_segments_for_retention() == 0
    plog.close()


def test_deleted_files_are_removed_on_reopen(tmp_path):
    clock = ManualClock(NOW)
    plog = five_segments(tmp_path, clock, retention_ms=1000)
    plog.high_watermark = plog.log_end_offset
    clock.advance(100_000)
    assert plog.delete_segments_for_retention() == 5
    log_start = plog.log_start_offset
    plog.close()
    again = PartitionLog.open(plog.dir, "t", 0, topic_config(segment_bytes=100), clock,
                              log_start_offset=log_start)
    assert not [n for n in os.listdir(plog.dir) if n.endswith(".deleted")]
    assert (again.log_start_offset, again.log_end_offset) == (5, 5)
    again.close()


# --- flushing and followers ---------------------------------------------------------------


def test_needs_flush_on_flush_messages_and_flush_ms(tmp_path):
    clock = ManualClock(NOW)
    plog = open_log(tmp_path, clock, flush_messages=3, flush_ms=1000)
    assert not plog.needs_flush()
    append(plog, [b"a", b"b"])
    assert not plog.needs_flush()
    append(plog, [b"c"])
    assert plog.needs_flush()
    plog.fsync()
    assert not plog.needs_flush()
    assert plog.recovery_point == 3
    append(plog)
    clock.advance(999)
    assert not plog.needs_flush()
    clock.advance(1)
    assert plog.needs_flush()
    plog.close()


def test_append_as_follower_keeps_the_leaders_offsets(tmp_path):
    plog = open_log(tmp_path)
    a = build_batch([NewRecord(b"a", timestamp=NOW), NewRecord(b"b", timestamp=NOW)],
                    base_offset=0, partition_leader_epoch=2)
    b = build_batch([NewRecord(b"c", timestamp=NOW)], base_offset=2, partition_leader_epoch=4)
    plog.append_as_follower(a + b, [read_header(a), read_header(b)])
    assert plog.log_end_offset == 3
    assert plog.leader_epochs == [(2, 0), (4, 2)]
    assert plog.read(0, 1 << 20, 3, True).slice.read() == a + b
    with pytest.raises(ValueError):  # InvalidBatch: below the log end offset
        plog.append_as_follower(b, [read_header(b)])
    plog.close()


def test_read_without_min_one_never_skips_to_a_later_batch(tmp_path):
    """A batch too big for max_bytes (min_one False: not the first partition of a fetch)
    gives nothing, not the next segment's batch, which would skip offsets."""
    plog = open_log(tmp_path, segment_bytes=250)
    append(plog, [b"x" * 150])  # offset 0, about 220 bytes
    append(plog, [b"y"])  # offset 1, in the next segment
    assert [s.base_offset for s in plog.segments] == [0, 1]
    small = plog.segments[1].size
    assert small < 100 < plog.segments[0].size
    assert plog.read(0, 100, 2, min_one=False).slice is None
    assert plog.read(0, 100, 2, min_one=True).slice.size == plog.segments[0].size
    assert plog.read(1, 100, 2, min_one=False).slice.size == small
    plog.close()


def _follower_batches(n: int, first_ts: int = NOW, step_ms: int = 0, epoch_at=None):
    """n leader batches of 1-3 records with offsets assigned, as a fetch response holds."""
    batches, offset = [], 0
    for i in range(n):
        count = 1 + i % 3
        epoch = epoch_at(i) if epoch_at else 0
        batches.append(build_batch(
            [NewRecord(b"v%d" % i * (1 + i % 5), key=b"k", timestamp=first_ts + i * step_ms)
             for _ in range(count)], base_offset=offset, partition_leader_epoch=epoch))
        offset += count
    return batches


def _layout(plog: PartitionLog):
    return [(s.base_offset, s.size, s.next_offset, list(s.index.relative_offsets),
             list(s.index.positions), list(s.time_index.timestamps),
             list(s.time_index.relative_offsets), s.first_batch_timestamp)
            for s in plog.segments]


@pytest.mark.parametrize("overrides,step_ms", [
    ({}, 0),
    ({"segment_bytes": 300}, 0),
    ({"segment_ms": 1000}, 400),
    ({"segment_index_bytes": 24, "index_interval_bytes": 0}, 1),
    ({"segment_index_bytes": 24, "index_interval_bytes": 0}, 0),
    ({"segment_bytes": 500, "index_interval_bytes": 100}, 7),
])
def test_follower_append_of_many_batches_matches_one_by_one(tmp_path, overrides, step_ms):
    """One append_as_follower call with a fetch response's batches (written per segment
    in one write) lays out segments and indexes exactly as batch-by-batch appends."""
    batches = _follower_batches(23, step_ms=step_ms, epoch_at=lambda i: i // 10)
    one = PartitionLog.open(str(tmp_path / "a" / "t-0"), "t", 0, topic_config(**overrides),
                            ManualClock(NOW))
    many = PartitionLog.open(str(tmp_path / "b" / "t-0"), "t", 0, topic_config(**overrides),
                             ManualClock(NOW))
    for b in batches:
        one.append_as_follower(b, [read_header(b)])
    data = memoryview(b"".join(batches))
    many.append_as_follower(data[:len(data)], [read_header(b) for b in batches])
    assert _layout(many) == _layout(one)
    starts = [read_header(batches[i]).base_offset for i in (0, 10, 20)]
    assert many.leader_epochs == one.leader_epochs == list(enumerate(starts))
    assert many.log_end_offset == one.log_end_offset == sum(1 + i % 3 for i in range(23))
    assert many.unflushed_messages == one.unflushed_messages
    for a, b in zip(many.segments, one.segments, strict=True):
        assert a.read_bytes(0, a.size) == b.read_bytes(0, b.size)
    if overrides:
        assert len(many.segments) > 1
    assert read_all(many) == read_all(one)
    many.close()
    one.close()


def test_follower_append_below_the_log_end_appends_nothing(tmp_path):
    plog = open_log(tmp_path)
    a, b = _follower_batches(2)
    plog.append_as_follower(a, [read_header(a)])
    end = plog.log_end_offset
    with pytest.raises(ValueError):  # InvalidBatch: b is fine, a again is not
        plog.append_as_follower(b + a, [read_header(b), read_header(a)])
    assert plog.log_end_offset == end and plog.active_segment.size == len(a)
    plog.close()


def test_a_flush_overtaken_by_a_truncation_does_not_move_the_recovery_point(tmp_path):
    """The fsync runs off the loop; meanwhile a follower truncates and appends new records
    past the flush's end. Before, `flushed(end)` then set the recovery point to `end`,
    claiming the new, unflushed records durable (after a power loss, recovery would not
    check them)."""
    plog = open_log(tmp_path)
    for v in (b"a", b"b", b"c", b"d"):
        append(plog, [v])
    end, segments = plog.start_flush()  # on the loop; the fsync would now run off it
    assert end == 4
    plog.truncate_to(1)
    for v in (b"x", b"y", b"z"):
        append(plog, [v])
    plog.fsync_segments(segments)
    plog.flushed(end)
    assert plog.recovery_point <= 1
    plog.fsync()  # a flush that starts after the truncation counts
    assert plog.recovery_point == 4
    plog.close()


def test_a_flush_overtaken_by_a_full_truncation_does_not_move_the_recovery_point(tmp_path):
    plog = open_log(tmp_path)
    for v in (b"a", b"b"):
        append(plog, [v])
    end, segments = plog.start_flush()
    plog.truncate_fully_and_start_at(0)  # a follower starting over
    for v in (b"x", b"y", b"z"):
        append(plog, [v])
    plog.fsync_segments(segments)
    plog.flushed(end)
    assert plog.recovery_point == 0
    plog.close()
