"""Checks a produced record batch must pass before it is appended (Kafka's LogValidator).

The hot path reads only the 61-byte header and the CRC (`validate_header`); records are
read only when the topic's configuration needs them (`needs_records`: keys on a compacted
topic, or a compression.type other than the producer's), by `validate_records`, which is
pure and may run off the event loop. A compressed batch is decompressed in one bounded
native call: records may take at most `max_records_bytes(config)` bytes (16 times
max.message.bytes, at least 16 MiB), else the batch is refused with MESSAGE_TOO_LARGE
having cost no more than that. The records are checked field by field without building
them, and a batch that changes codec keeps its records' bytes as they are.
"""

from __future__ import annotations

from strom.config import TopicConfig
from strom.protocol.batch import (
    BatchHeader,
    Compression,
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


RECORDS_BYTES_PER_MESSAGE_BYTE = 16  # records may decompress to 16 x max.message.bytes
MIN_MAX_RECORDS_BYTES = 16 * 1024 * 1024


def max_records_bytes(config: TopicConfig) -> int:
    """The most bytes a batch's records may take once decompressed."""
    return max(MIN_MAX_RECORDS_BYTES,
               RECORDS_BYTES_PER_MESSAGE_BYTE * config.get("max.message.bytes"))


def validate_batch(data: bytes | bytearray, config: TopicConfig, now_ms: int) -> BatchHeader:
    """Validate the single v2 batch in a partition's produce data, its records included
    (they are not recompressed: see `validate_records`); return its header.

    Raises CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, INVALID_RECORD or INVALID_TIMESTAMP errors.
    """
    header = validate_header(data, config, now_ms)
    if config.compact:
        _check_records(data, header, config, recompress=False)
    return header


def validate_header(data: bytes | bytearray, config: TopicConfig, now_ms: int) -> BatchHeader:
    """The checks of `validate_batch` that need only the header and the CRC."""
    size = batch_size_at(data, 0)
    if size is None:
        raise CorruptMessage(f"Record data of {len(data)} bytes is too short for a batch")
    if size > config.max_message_bytes:
        raise MessageTooLarge(
            f"The batch of {size} bytes is larger than max.message.bytes "
            f"({config.max_message_bytes})")
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
        if header.max_timestamp - now_ms > config.message_timestamp_after_max_ms or \
                now_ms - header.base_timestamp > config.message_timestamp_before_max_ms:
            raise InvalidTimestamp(
                f"Timestamp {header.max_timestamp} of the batch is out of the range allowed "
                f"by message.timestamp.before.max.ms/after.max.ms")
    return header


def _wanted_codec(header: BatchHeader, config: TopicConfig) -> Compression | None:
    """The codec the topic wants the batch in, when it is not the producer's."""
    wanted = Compression.for_topic_config(config.compression_type)
    if wanted is None or wanted == header.compression_id:
        return None
    return wanted


def needs_records(header: BatchHeader, config: TopicConfig) -> bool:
    """Whether `validate_records` has work to do for this batch (else the header suffices)."""
    return config.compact or _wanted_codec(header, config) is not None


def validate_records(data: bytearray, header: BatchHeader, config: TopicConfig
                     ) -> tuple[bytearray, BatchHeader]:
    """The record-level checks the topic asks for (keys on a compacted topic), and the
    batch re-encoded with the topic's compression.type when it is not "producer" and differs
    from the producer's codec, as Kafka does (offsets, timestamps, producer fields and the
    records' bytes are kept). Pure: safe to run in an executor."""
    return _check_records(data, header, config, recompress=True)


def _check_records(data: bytes | bytearray, header: BatchHeader, config: TopicConfig,
                   recompress: bool) -> tuple[bytearray, BatchHeader]:
    from strom.log.records import (
        CorruptRecordError,
        RecordsTooLarge,
        null_key_indexes,
        records_area,
        with_compression,
    )

    codec = _wanted_codec(header, config) if recompress else None
    if not config.compact and codec is None:
        return data, header
    limit = max_records_bytes(config)
    try:
        area = records_area(data, 0, header, verify_crc=False, max_size=limit)
        missing = null_key_indexes(area, header)
    except RecordsTooLarge as e:
        raise MessageTooLarge(f"{e}, the most the records of one batch may take "
                              f"(16 x max.message.bytes, at least 16 MiB)") from None
    except CorruptRecordError as e:
        raise CorruptMessage(str(e)) from None
    if config.compact and missing:
        raise RecordErrors(
            "Compacted topic cannot accept message without key",
            [(i, "Compacted topic cannot accept message without key in topic partition.")
             for i in missing])
    if codec is None:
        return data, header
    rebuilt = bytearray(with_compression(data, header, codec, area))
    return rebuilt, read_header(rebuilt)
