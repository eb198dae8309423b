"""PartitionLog.maybe_increment_log_start_offset (DeleteRecords, a follower following its
leader): bounded by the high watermark, never backwards, leader epochs folded, whole
segments below the new start retired, reads below it OFFSET_OUT_OF_RANGE."""

from __future__ import annotations

import pytest

from strom.protocol.errors import OffsetOutOfRange
from tests.unit.test_partition_log import append, log_files, open_log, read_all


def filled(tmp_path, n: int = 12):
    plog = open_log(tmp_path, segment_bytes=200)
    for i in range(n):
        append(plog, [b"v%d" % i], epoch=0 if i < 6 else 3)
    plog.high_watermark = plog.log_end_offset
    return plog


def test_moves_up_to_the_high_watermark_only(tmp_path):
    plog = filled(tmp_path)
    plog.high_watermark = 9
    with pytest.raises(OffsetOutOfRange):
        plog.maybe_increment_log_start_offset(10)
    assert plog.log_start_offset == 0
    assert plog.maybe_increment_log_start_offset(9)
    assert not plog.maybe_increment_log_start_offset(4)  # never backwards
    assert plog.log_start_offset == 9


def test_segments_below_the_start_are_retired_and_reads_refused(tmp_path):
    plog = filled(tmp_path)
    before = log_files(plog)
    assert len(before) > 3
    assert plog.maybe_increment_log_start_offset(7)
    assert plog.segments[0].base_offset <= 7 < plog.segments[0].next_offset
    assert len(log_files(plog)) < len(before)
    assert all(s.log_path.endswith(".deleted") for s in plog.take_retired())
    with pytest.raises(OffsetOutOfRange):
        plog.read(6, 1 << 20, plog.log_end_offset, min_one=True)
    assert [o for o, _ in read_all(plog, 7)][0] <= 7


def test_leader_epochs_below_the_start_are_folded(tmp_path):
    plog = filled(tmp_path)
    assert [e for e, _ in plog.leader_epochs] == [0, 3]
    plog.maybe_increment_log_start_offset(4)
    assert plog.leader_epochs == [(0, 4), (3, 6)]
    plog.maybe_increment_log_start_offset(8)
    assert plog.leader_epochs == [(3, 8)]
