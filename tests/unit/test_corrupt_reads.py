"""Corrupt batches and failed reads of segment files (issue 10, defect 4): the read that
reaches them answers CORRUPT_MESSAGE or KAFKA_STORAGE_ERROR (logged once, with the file and
position), the batches before them are served, and a damaged tail found at a clean
start-up is recovered instead of hiding every later append."""

from __future__ import annotations

import logging
import os
import struct

import pytest

from strom.clock import ManualClock
from strom.log.partition_log import PartitionLog
from strom.log.segment import CorruptBatch
from strom.protocol.errors import ErrorCode, KafkaError
from tests.unit.test_partition_log import NOW, append, topic_config

BATCHES = 5


def written(tmp_path, **overrides) -> tuple[PartitionLog, list[int]]:
    """A closed log of five one-record batches; returns (log, file position of each)."""
    plog = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, topic_config(**overrides),
                             ManualClock(NOW))
    for i in range(BATCHES):
        append(plog, values=(b"v%d" % i,))
    positions = [bp.position for bp in plog.active_segment.batches()]
    plog.fsync()
    plog.close()
    return plog, positions


def reopen(plog: PartitionLog, **overrides) -> PartitionLog:
    return PartitionLog.open(plog.dir, "t", 0, topic_config(**overrides), ManualClock(NOW),
                             high_watermark=BATCHES)


def damage(plog: PartitionLog, position: int, field: int, value: bytes) -> str:
    path = os.path.join(plog.dir, "00000000000000000000.log")
    with open(path, "r+b") as f:
        f.seek(position + field)
        f.write(value)
    return path


BAD_LENGTH = (8, struct.pack(">i", 0x7FFFFFF0))
BAD_MAGIC = (16, b"\x07")


@pytest.mark.parametrize("field,value", [BAD_LENGTH, BAD_MAGIC], ids=["length", "magic"])
def test_a_read_reaching_a_corrupt_batch_answers_corrupt_message_once_logged(
        tmp_path, caplog, field, value):
    plog, positions = written(tmp_path, index_interval_bytes=0)  # the damage is indexed
    path = damage(plog, positions[1], field, value)
    plog = reopen(plog, index_interval_bytes=0)
    assert plog.log_end_offset == BATCHES  # the clean start-up did not read it
    first = plog.read(0, 1 << 20, BATCHES, min_one=True)
    assert first.slice is not None and first.slice.size == positions[1]  # batch 0 only
    with caplog.at_level(logging.ERROR, logger="strom.log.partition_log"):
        for _ in range(3):
            with pytest.raises(KafkaError) as e:
                plog.read(1, 1 << 20, BATCHES, min_one=True)
            assert e.value.code == ErrorCode.corrupt_message
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 1
    assert path in logged[0] and f"position {positions[1]}" in logged[0]
    # past the damage, where the index leads, reads go on
    assert plog.read(3, 1 << 20, BATCHES, min_one=True).slice is not None
    plog.close()


def test_a_failed_read_answers_kafka_storage_error(tmp_path, caplog):
    plog, _ = written(tmp_path)
    plog = reopen(plog)
    seg = plog.active_segment
    os.close(seg.fd)  # every pread now fails with EBADF
    try:
        with caplog.at_level(logging.ERROR, logger="strom.log.partition_log"):
            for _ in range(2):
                with pytest.raises(KafkaError) as e:
                    plog.read(0, 1 << 20, BATCHES, min_one=True)
                assert e.value.code == ErrorCode.kafka_storage_error
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    finally:
        seg.fd = -1
        plog.close()


def test_a_damaged_tail_at_a_clean_start_is_recovered_and_logged(tmp_path, caplog):
    # no index entries: the start-up reads every header, as in the report
    plog, positions = written(tmp_path)
    path = damage(plog, positions[1], *BAD_LENGTH)
    with caplog.at_level(logging.WARNING, logger="strom.log.segment"):
        plog = reopen(plog)
    # before: the log ended at 1 but kept the damaged bytes, and appends went after them
    # where no read reached them; now the damage is cut off and appends are read back
    assert plog.log_end_offset == 1
    assert plog.active_segment.size == positions[1] == os.path.getsize(path)
    assert any(r.levelno == logging.ERROR and path in r.getMessage()
               and f"position {positions[1]}" in r.getMessage() for r in caplog.records)
    append(plog, values=(b"after",))
    res = plog.read(1, 1 << 20, plog.log_end_offset, min_one=True)
    assert res.slice is not None and res.slice.position == positions[1]
    plog.close()


def test_batches_stop_at_trailing_bytes_that_are_not_a_batch(tmp_path):
    plog, positions = written(tmp_path)
    plog = reopen(plog)
    seg = plog.active_segment
    os.write(seg.fd, b"\0" * 10)
    seg.size += 10
    with pytest.raises(CorruptBatch) as e:
        list(seg.batches())
    assert e.value.position == seg.size - 10
    plog.close()


@pytest.mark.parametrize("field,value", [BAD_LENGTH, BAD_MAGIC], ids=["length", "magic"])
def test_a_timestamp_lookup_reaching_a_corrupt_batch_answers_corrupt_message(
        tmp_path, field, value):
    plog, positions = written(tmp_path, index_interval_bytes=0)
    damage(plog, positions[1], field, value)
    plog = reopen(plog, index_interval_bytes=0)
    with pytest.raises(KafkaError) as e:  # ListOffsets max-timestamp reads every header
        plog.max_timestamp_offset(BATCHES)
    assert e.value.code == ErrorCode.corrupt_message
    assert plog.offset_for_timestamp(NOW, BATCHES) == (0, NOW)  # before the damage
    plog.close()
