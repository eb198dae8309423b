"""Checks a produced record batch must pass before it is appended (Kafka's LogValidator).

The hot path reads only the 61-byte header and the CRC; records are decoded only when the
topic's configuration needs their contents (keys on a compacted topic).
"""

from __future__ import annotations

from strom.config import TopicConfig
from strom.protocol.batch import (
    BatchHeader,
    InvalidBatch,
    batch_size_at,
    crc_is_valid,
    read_header,
)
from strom.protocol.errors import CorruptMessage, InvalidRecord, InvalidTimestamp, MessageTooLarge


class RecordErrors(InvalidRecord):
    """INVALID_RECORD with per-record errors (batch index, message)."""

    def __init__(self, message: str, record_errors: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.record_errors = record_errors


def validate_batch(data: bytes | bytearray, config: TopicConfig, now_ms: int) -> BatchHeader:
    """Validate the single v2 batch in a partition's produce data; return its header.

    Raises CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, INVALID_RECORD or INVALID_TIMESTAMP errors.
    """
    size = batch_size_at(data, 0)
    if size is None:
        raise CorruptMessage(f"Record data of {len(data)} bytes is too short for a batch")
    if size > config.get("max.message.bytes"):
        raise MessageTooLarge(
            f"The batch of {size} bytes is larger than max.message.bytes "
            f"({config.get('max.message.bytes')})")
    try:
        header = read_header(data)
    except InvalidBatch as e:
        raise CorruptMessage(str(e)) from None
    if size > len(data):
        raise CorruptMessage(f"Batch length {size} exceeds the {len(data)} bytes sent")
    if size < len(data):
        raise InvalidRecord("Produce requests with version 3 and above must contain "
                            "exactly one record batch")
    if not crc_is_valid(data, 0, header):
        raise CorruptMessage("Record batch failed its CRC-32C check")
    if header.records_count <= 0 or header.last_offset_delta != header.records_count - 1:
        raise InvalidRecord(f"Batch has {header.records_count} records but last offset delta "
                            f"{header.last_offset_delta}")
    if header.is_control:
        raise InvalidRecord("Clients may not produce control batches")
    if not config.log_append_time:
        after = config.get("message.timestamp.after.max.ms")
        before = config.get("message.timestamp.before.max.ms")
        if header.max_timestamp - now_ms > after or now_ms - header.base_timestamp > before:
            raise InvalidTimestamp(
                f"Timestamp {header.max_timestamp} of the batch is out of the range allowed "
                f"by message.timestamp.before.max.ms/after.max.ms")
    if config.compact:
        _check_keys(data)
    return header


_CODECS = {"uncompressed": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def maybe_recompress(data: bytearray, header: BatchHeader, config: TopicConfig
                     ) -> tuple[bytearray, BatchHeader]:
    """Re-encode the batch with the topic's compression.type when it is not "producer" and
    differs from the producer's codec, as Kafka does. Offsets, timestamps and producer
    fields are kept."""
    wanted = config.get("compression.type")
    if wanted == "producer" or _CODECS[wanted] == header.compression:
        return data, header
    from strom.log.records import CorruptRecordError, NewRecord, build_batch, decode_batch

    try:
        records = decode_batch(bytes(data), verify_crc=False).records
    except CorruptRecordError as e:
        raise CorruptMessage(str(e)) from None
    # as Kafka's LogValidator when it re-encodes: the records get consecutive offsets,
    # whatever their offsetDelta fields said
    records = [NewRecord(r.value, r.key, r.headers, r.timestamp) for r in records]
    rebuilt = bytearray(build_batch(
        records, base_offset=header.base_offset, compression=_CODECS[wanted],
        producer_id=header.producer_id, producer_epoch=header.producer_epoch,
        base_sequence=header.base_sequence, timestamp_type=int(header.is_log_append_time),
        is_transactional=header.is_transactional,
        partition_leader_epoch=header.partition_leader_epoch,
        max_timestamp=header.max_timestamp, last_offset_delta=header.last_offset_delta))
    return rebuilt, read_header(rebuilt)


def _check_keys(data: bytes | bytearray) -> None:
    from strom.log.records import CorruptRecordError, decode_batch

    try:
        records = decode_batch(bytes(data), verify_crc=False).records
    except CorruptRecordError as e:
        raise CorruptMessage(str(e)) from None
    missing = [(i, "Compacted topic cannot accept message without key in topic partition.")
               for i, r in enumerate(records) if r.key is None]
    if missing:
        raise RecordErrors("Compacted topic cannot accept message without key", missing)
