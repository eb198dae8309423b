"""strom.log.producer_state and idempotent appends through PartitionLog.append_as_leader."""

from __future__ import annotations

import pytest

from strom.clock import ManualClock
from strom.config import BrokerConfig, TopicConfig, validate_topic_configs
from strom.log.partition_log import PartitionLog
from strom.log.producer_state import ProducerStateManager
from strom.log.records import NewRecord, build_batch, decode_batch
from strom.protocol.batch import read_header
from strom.protocol.errors import ErrorCode, InvalidProducerEpoch, OutOfOrderSequence

NOW = 1_700_000_000_000
PID = 4000
INT32_MAX = (1 << 31) - 1


def open_log(path, **overrides) -> PartitionLog:
    raw = {k.replace("_", "."): str(v) for k, v in overrides.items()}
    config = TopicConfig(BrokerConfig({}), validate_topic_configs(raw))
    return PartitionLog.open(str(path), "t", 0, config, ManualClock(NOW))


def batch(seq: int, n: int = 1, epoch: int = 0, pid: int = PID, tag: bytes = b"") -> bytearray:
    return bytearray(build_batch(
        [NewRecord(tag + b"%d" % (seq + i), timestamp=NOW) for i in range(n)],
        producer_id=pid, producer_epoch=epoch, base_sequence=seq))


def produce(plog: PartitionLog, data: bytearray):
    return plog.append_as_leader(bytearray(data), read_header(data), 0)


def all_values(plog: PartitionLog) -> list[bytes]:
    data = plog.read(0, 1 << 20, plog.log_end_offset, True).slice.read()
    out, pos = [], 0
    while pos < len(data):
        b = decode_batch(data, pos)
        out += [r.value for r in b.records]
        pos += b.header.size
    return out


def test_retried_batch_is_not_written_twice(tmp_path):
    plog = open_log(tmp_path / "t-0")
    first = produce(plog, batch(0, n=3))
    second = produce(plog, batch(3, n=2))
    size = plog.size_in_bytes
    retry = produce(plog, batch(0, n=3))
    assert retry.duplicate is True
    assert (retry.base_offset, retry.last_offset) == (first.base_offset, first.last_offset)
    retry2 = produce(plog, batch(3, n=2))
    assert retry2.duplicate and (retry2.base_offset, retry2.last_offset) == (3, 4)
    assert second.duplicate is False
    assert plog.size_in_bytes == size
    assert plog.log_end_offset == 5
    assert all_values(plog) == [b"0", b"1", b"2", b"3", b"4"]


def test_only_the_last_five_batches_are_remembered(tmp_path):
    plog = open_log(tmp_path / "t-0")
    for seq in range(6):
        produce(plog, batch(seq))
    assert produce(plog, batch(1)).duplicate  # still in the window of five
    with pytest.raises(OutOfOrderSequence):
        produce(plog, batch(0))  # forgotten: no longer recognised as a duplicate


def test_sequence_gap_is_out_of_order(tmp_path):
    plog = open_log(tmp_path / "t-0")
    produce(plog, batch(0, n=2))
    with pytest.raises(OutOfOrderSequence) as e:
        produce(plog, batch(3))
    assert e.value.code == ErrorCode.out_of_order_sequence_number
    with pytest.raises(OutOfOrderSequence):
        produce(plog, batch(1))  # overlaps the last batch without matching it
    assert plog.log_end_offset == 2
    assert produce(plog, batch(2)).base_offset == 2


def test_older_epoch_is_fenced(tmp_path):
    plog = open_log(tmp_path / "t-0")
    produce(plog, batch(0, epoch=3))
    with pytest.raises(InvalidProducerEpoch) as e:
        produce(plog, batch(1, epoch=2))
    assert e.value.code == ErrorCode.invalid_producer_epoch
    assert plog.log_end_offset == 1


def test_new_epoch_must_start_at_zero(tmp_path):
    plog = open_log(tmp_path / "t-0")
    produce(plog, batch(0, n=5, epoch=0))
    with pytest.raises(OutOfOrderSequence):
        produce(plog, batch(5, epoch=1))
    r = produce(plog, batch(0, epoch=1))
    assert r.base_offset == 5 and not r.duplicate
    # the old epoch is now fenced, even for what used to be a duplicate
    with pytest.raises(InvalidProducerEpoch):
        produce(plog, batch(0, n=5, epoch=0))
    assert produce(plog, batch(1, epoch=1)).base_offset == 6


def test_unknown_producer_may_start_at_any_sequence(tmp_path):
    plog = open_log(tmp_path / "t-0")
    r = produce(plog, batch(42, n=2))
    assert (r.base_offset, r.duplicate) == (0, False)
    assert produce(plog, batch(44)).base_offset == 2
    # producers are independent
    assert produce(plog, batch(7, pid=PID + 1)).base_offset == 3
    with pytest.raises(OutOfOrderSequence):
        produce(plog, batch(46))


def test_sequence_wraps_after_int32_max(tmp_path):
    plog = open_log(tmp_path / "t-0")
    produce(plog, batch(INT32_MAX - 1, n=2))  # sequences INT32_MAX - 1, INT32_MAX
    assert produce(plog, batch(0)).base_offset == 2


def test_non_idempotent_batches_are_not_checked(tmp_path):
    plog = open_log(tmp_path / "t-0")
    plain = bytearray(build_batch([NewRecord(b"x", timestamp=NOW)]))
    assert produce(plog, plain).base_offset == 0
    assert produce(plog, plain).base_offset == 1  # no dedup without a producer id
    assert plog.producer_state.producers == {}


def test_state_survives_reopen(tmp_path):
    plog = open_log(tmp_path / "t-0", segment_bytes=200)
    for seq in range(0, 8, 2):
        produce(plog, batch(seq, n=2))
    produce(plog, batch(0, epoch=0, pid=PID + 1))
    assert len(plog.segments) > 1
    plog.close()
    again = open_log(tmp_path / "t-0", segment_bytes=200)
    retry = produce(again, batch(6, n=2))
    assert retry.duplicate and (retry.base_offset, retry.last_offset) == (6, 7)
    with pytest.raises(OutOfOrderSequence):
        produce(again, batch(9))
    assert produce(again, batch(8)).base_offset == 9
    assert produce(again, batch(1, pid=PID + 1)).base_offset == 10
    again.close()


def test_state_follows_truncation(tmp_path):
    plog = open_log(tmp_path / "t-0")
    produce(plog, batch(0, n=2))
    produce(plog, batch(2, n=2))
    plog.truncate_to(2)
    # the batch at 2-3 is gone, so its retry is new data, not a duplicate
    r = produce(plog, batch(2, n=2))
    assert (r.base_offset, r.duplicate) == (2, False)


def test_manager_directly():
    psm = ProducerStateManager()
    h = read_header(batch(0, n=2))
    assert psm.check(h) is None
    psm.update(h, NOW)
    assert psm.producers[PID].last_seq == 1
    dup = psm.check(read_header(batch(0, n=2)))
    assert dup is not None and (dup.first_seq, dup.last_seq) == (0, 1)
    # an update with an older epoch (e.g. while loading a log) is ignored
    psm.update(read_header(batch(0, n=2, epoch=3)), NOW)
    psm.update(read_header(batch(9, epoch=1)), NOW)
    assert psm.producers[PID].epoch == 3 and psm.producers[PID].last_seq == 1
    psm.remove_expired(NOW + 999, expiration_ms=1000)
    assert PID in psm.producers
    psm.remove_expired(NOW + 1000, expiration_ms=1000)  # as Kafka: idle >= expiration
    assert psm.producers == {}
