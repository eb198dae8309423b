"""strom.log.validator.validate_batch: every check a produced batch must pass."""

from __future__ import annotations

import pytest

from strom.config import BrokerConfig, TopicConfig, validate_topic_configs
from strom.log.records import Compression, NewRecord, build_batch, decode_batch, end_txn_marker
from strom.log.validator import (
    RecordErrors,
    max_records_bytes,
    needs_records,
    validate_batch,
    validate_header,
    validate_records,
)
from strom.protocol.errors import (
    CorruptMessage,
    ErrorCode,
    InvalidRecord,
    InvalidTimestamp,
    MessageTooLarge,
)

NOW = 1_700_000_000_000
HOUR = 3_600_000


def topic_config(**overrides: object) -> TopicConfig:
    raw = {k.replace("_", "."): str(v) for k, v in overrides.items()}
    return TopicConfig(BrokerConfig({}), validate_topic_configs(raw))


def batch(*values: bytes | None, keys=None, ts: int = NOW, **kw) -> bytearray:
    keys = keys or [b"k"] * len(values)
    return bytearray(build_batch([NewRecord(v, key=k, timestamp=ts)
                                  for v, k in zip(values, keys, strict=True)], **kw))


def test_valid_batch_returns_its_header():
    data = batch(b"a", b"b", compression=Compression.GZIP)
    header = validate_batch(data, topic_config(), NOW)
    assert header.records_count == 2
    assert header.last_offset_delta == 1
    assert header.size == len(data)
    assert header.compression == Compression.GZIP


def test_crc_mismatch_is_corrupt_message():
    data = batch(b"hello")
    data[-1] ^= 0x01
    with pytest.raises(CorruptMessage) as e:
        validate_batch(data, topic_config(), NOW)
    assert e.value.code == ErrorCode.corrupt_message


def test_larger_than_max_message_bytes():
    data = batch(b"x" * 200)
    validate_batch(data, topic_config(max_message_bytes=len(data)), NOW)
    with pytest.raises(MessageTooLarge) as e:
        validate_batch(data, topic_config(max_message_bytes=len(data) - 1), NOW)
    assert e.value.code == ErrorCode.message_too_large


def test_two_batches_in_one_produce_is_invalid_record():
    with pytest.raises(InvalidRecord) as e:
        validate_batch(batch(b"a") + batch(b"b"), topic_config(), NOW)
    assert e.value.code == ErrorCode.invalid_record


@pytest.mark.parametrize("cut", [0, 5, 11, 12, 40, 60, -1])
def test_truncated_batch_is_corrupt_message(cut):
    data = batch(b"hello", b"world")
    with pytest.raises(CorruptMessage):
        validate_batch(data[:cut], topic_config(), NOW)


def test_bad_magic_is_corrupt_message():
    data = batch(b"a")
    data[16] = 1
    with pytest.raises(CorruptMessage):
        validate_batch(data, topic_config(), NOW)


def test_record_count_must_match_last_offset_delta():
    data = bytearray(build_batch([NewRecord(b"a", timestamp=NOW), NewRecord(b"b", timestamp=NOW)],
                                 last_offset_delta=5))
    with pytest.raises(InvalidRecord):
        validate_batch(data, topic_config(), NOW)
    empty = bytearray(build_batch([]))
    with pytest.raises(InvalidRecord):
        validate_batch(empty, topic_config(), NOW)


def test_control_batch_is_invalid_record():
    data = bytearray(build_batch([end_txn_marker(True, 0, NOW)], is_control=True,
                                 is_transactional=True, producer_id=1, producer_epoch=0))
    with pytest.raises(InvalidRecord):
        validate_batch(data, topic_config(), NOW)


def test_keyless_record_on_compacted_topic():
    data = batch(b"a", b"b", b"c", keys=[b"k", None, None])
    validate_batch(data, topic_config(), NOW)  # fine when not compacted
    with pytest.raises(RecordErrors) as e:
        validate_batch(data, topic_config(cleanup_policy="compact"), NOW)
    assert e.value.code == ErrorCode.invalid_record
    assert isinstance(e.value, InvalidRecord)
    assert [i for i, _ in e.value.record_errors] == [1, 2]
    assert all("without key" in msg for _, msg in e.value.record_errors)
    # compressed batches are decoded too; compact,delete counts as compacted
    zipped = batch(b"a", b"b", keys=[None, b"k"], compression=Compression.ZSTD)
    with pytest.raises(RecordErrors) as e:
        validate_batch(zipped, topic_config(cleanup_policy="compact,delete"), NOW)
    assert [i for i, _ in e.value.record_errors] == [0]
    keyed = batch(b"a", b"b", compression=Compression.SNAPPY)
    validate_batch(keyed, topic_config(cleanup_policy="compact"), NOW)


def test_timestamp_too_far_in_the_future():
    validate_batch(batch(b"a", ts=NOW + HOUR), topic_config(), NOW)  # default: 1 hour
    with pytest.raises(InvalidTimestamp) as e:
        validate_batch(batch(b"a", ts=NOW + HOUR + 1), topic_config(), NOW)
    assert e.value.code == ErrorCode.invalid_timestamp
    with pytest.raises(InvalidTimestamp):
        validate_batch(batch(b"a", ts=NOW + 1001),
                       topic_config(message_timestamp_after_max_ms=1000), NOW)
    # LogAppendTime topics overwrite timestamps, so they are not checked
    validate_batch(batch(b"a", ts=NOW + 10 * HOUR),
                   topic_config(message_timestamp_type="LogAppendTime"), NOW)


def test_timestamp_too_far_in_the_past():
    old = batch(b"a", ts=NOW - 2000)
    validate_batch(old, topic_config(), NOW)  # default: no limit
    with pytest.raises(InvalidTimestamp):
        validate_batch(old, topic_config(message_timestamp_before_max_ms=1000), NOW)


def test_records_over_the_bound_are_message_too_large():
    """Records may decompress to 16 x max.message.bytes (at least 16 MiB) at the most."""
    bomb = batch(bytes(17 << 20), compression=Compression.ZSTD)
    config = topic_config(cleanup_policy="compact")
    header = validate_header(bomb, config, NOW)  # the header alone is fine
    with pytest.raises(MessageTooLarge, match="16 x max.message.bytes"):
        validate_records(bomb, header, config)
    with pytest.raises(MessageTooLarge):
        validate_records(bomb, header, topic_config(compression_type="gzip"))
    assert max_records_bytes(topic_config(max_message_bytes=2 << 20)) == 32 << 20
    # 16 MiB of records is allowed
    fits = batch(bytes((16 << 20) - 100), compression=Compression.ZSTD)
    validate_records(fits, validate_header(fits, config, NOW), config)


@pytest.mark.parametrize("wanted, codec", [("gzip", Compression.GZIP),
                                           ("uncompressed", Compression.NONE),
                                           ("lz4", Compression.LZ4)])
def test_recompression_keeps_every_field_and_record(wanted, codec):
    data = batch(b"a", None, b"c", compression=Compression.ZSTD, producer_id=7,
                 producer_epoch=2, base_sequence=40, partition_leader_epoch=5)
    config = topic_config(compression_type=wanted)
    header = validate_header(data, config, NOW)
    assert needs_records(header, config)
    out, new = validate_records(data, header, config)
    assert new.compression is codec
    before, after = decode_batch(bytes(data)), decode_batch(bytes(out))
    assert after.records == before.records
    for field in ("base_offset", "last_offset_delta", "base_timestamp", "max_timestamp",
                  "producer_id", "producer_epoch", "base_sequence", "records_count",
                  "partition_leader_epoch"):
        assert getattr(new, field) == getattr(header, field), field
    # the producer's codec, or the topic's own: nothing to do
    assert not needs_records(header, topic_config(compression_type="zstd"))
    assert not needs_records(header, topic_config())
