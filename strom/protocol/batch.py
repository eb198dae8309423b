"""A view of the v2 record-batch header, the only part of a batch the hot path reads.

Batch layout (all integers big-endian; offsets are byte positions in the batch)::

     0 +-----------------------------+
       | baseOffset            int64 |  offset of the first record
     8 | batchLength           int32 |  bytes after this field (= size - 12)
    12 | partitionLeaderEpoch  int32 |
    16 | magic                 int8  |  2
    17 | crc                  uint32 |  CRC-32C of bytes 21 .. end
    21 +-----------------------------+ <- CRC starts here
       | attributes            int16 |  see below
    23 | lastOffsetDelta       int32 |  lastOffset - baseOffset
    27 | baseTimestamp         int64 |  or deleteHorizonMs when bit 6 is set
    35 | maxTimestamp          int64 |  (the append time for LogAppendTime)
    43 | producerId            int64 |  -1: not idempotent
    51 | producerEpoch         int16 |
    53 | baseSequence          int32 |  -1: no sequence
    57 | recordsCount          int32 |
    61 +-----------------------------+
       | records ...                 |  compressed as one block when codec != 0
       +-----------------------------+

    attributes (int16):
       bits 0-2  compression: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
       bit  3    timestampType: 0 CreateTime, 1 LogAppendTime
       bit  4    isTransactional
       bit  5    isControlBatch
       bit  6    hasDeleteHorizonMs
       bits 7-15 unused (0)

On append the broker patches baseOffset and partitionLeaderEpoch (outside the CRC) and, for
LogAppendTime, the timestamp type bit and maxTimestamp (re-computing the CRC).

Records stay opaque: they are decoded only where a feature needs them (see log/records.py).
This module holds the one definition of the header (`BatchHeader`, `read_header`), of the
codec table (`Compression`: attribute ids and Kafka's names) and of the timestamp types.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import crc32c

HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the bytes not counted in batchLength
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
MAX_TIMESTAMP_OFFSET = 35

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20
DELETE_HORIZON_FLAG = 0x40

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1

_HEADER = struct.Struct(">qiibIhiqqqhii")
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_SIZE = struct.Struct(">qi")


MAGIC_V2 = 2
_INT32_MAX = 2**31 - 1


class InvalidBatch(ValueError):
    """Bytes that are not a well-formed v2 record batch (Kafka's CORRUPT_MESSAGE)."""


class Compression(IntEnum):
    """The codec in attribute bits 0-2; `str()` gives Kafka's lower-case name, the one a
    producer's compression.type takes ("none", "gzip", ...)."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def for_topic_config(cls, value: str) -> Compression | None:
        """The codec a topic's compression.type asks for: None for "producer" (keep the
        producer's); "uncompressed" is NONE."""
        if value == "producer":
            return None
        return cls.NONE if value == "uncompressed" else cls[value.upper()]


# the values of a topic's (and the broker's) compression.type, in Kafka's order
TOPIC_COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")


class TimestampType(IntEnum):
    """Attribute bit 3; `str()` gives Kafka's name (`CreateTime`, `LogAppendTime`)."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1

    def __str__(self) -> str:
        return "CreateTime" if self is TimestampType.CREATE_TIME else "LogAppendTime"


@dataclass(slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Bytes of the whole batch, including baseOffset and batchLength."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1

    @property
    def compression_id(self) -> int:
        """The codec bits as they are (0-7)."""
        return self.attributes & COMPRESSION_MASK

    @property
    def compression(self) -> Compression:
        """The codec; raises InvalidBatch for ids 5-7."""
        try:
            return Compression(self.attributes & COMPRESSION_MASK)
        except ValueError:
            raise InvalidBatch(
                f"unknown compression type id {self.compression_id}") from None

    @property
    def timestamp_type(self) -> TimestampType:
        return (TimestampType.LOG_APPEND_TIME if self.attributes & TIMESTAMP_TYPE_MASK
                else TimestampType.CREATE_TIME)

    @property
    def has_delete_horizon(self) -> bool:
        return bool(self.attributes & DELETE_HORIZON_FLAG)

    @property
    def delete_horizon_ms(self) -> int | None:
        """Set by the log cleaner; kept in the baseTimestamp field."""
        return self.base_timestamp if self.has_delete_horizon else None

    @property
    def is_log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_MASK)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG)

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id >= 0

    @property
    def last_sequence(self) -> int:
        if self.base_sequence < 0:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) % (1 << 31)

    def sequence_of(self, offset: int) -> int:
        """The producer sequence of the record at `offset` (-1 without idempotence); wraps
        from INT32_MAX to 0, as Kafka's."""
        if self.base_sequence < 0:
            return NO_SEQUENCE
        increment = offset - self.base_offset
        if self.base_sequence > _INT32_MAX - increment:
            return increment - (_INT32_MAX - self.base_sequence) - 1
        return self.base_sequence + increment


def read_header(buf, pos: int = 0) -> BatchHeader:
    """Parse the batch header at `pos` of any buffer (bytes, memoryview, mmap).

    Checks that the header is complete, that magic is 2 and that batchLength is at least
    49; does not check that the rest of the batch is present or the CRC. Raises InvalidBatch.
    """
    if pos < 0 or len(buf) - pos < HEADER_SIZE:
        raise InvalidBatch(
            f"batch header needs {HEADER_SIZE} bytes, {max(len(buf) - pos, 0)} available")
    header = BatchHeader(*_HEADER.unpack_from(buf, pos))
    if header.magic != MAGIC_V2:
        raise InvalidBatch(f"unsupported magic {header.magic} (only v2 batches)")
    if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
        raise InvalidBatch(f"batch length {header.batch_length} is smaller than the minimum "
                           f"{HEADER_SIZE - LOG_OVERHEAD}")
    return header


def encode_batch(header: BatchHeader, records: bytes) -> bytes:
    """A whole batch: `header`'s fields (its batchLength, magic and crc are ignored and
    computed: 49 + len(records), 2, the CRC-32C) followed by the records area as given
    (already compressed when the codec bits say so). Raises ValueError for a field that
    does not fit its type."""
    try:
        head = _HEADER.pack(header.base_offset, HEADER_SIZE - LOG_OVERHEAD + len(records),
                            header.partition_leader_epoch, MAGIC_V2, 0, header.attributes,
                            header.last_offset_delta, header.base_timestamp,
                            header.max_timestamp, header.producer_id, header.producer_epoch,
                            header.base_sequence, header.records_count)
    except struct.error as exc:
        raise ValueError(f"batch header field out of range: {exc}") from exc
    out = bytearray(head)
    out += records
    _UINT32.pack_into(out, CRC_OFFSET, crc32c.crc32c(memoryview(out)[ATTRIBUTES_OFFSET:]))
    return bytes(out)


def batch_size_at(buf: bytes | bytearray | memoryview, pos: int) -> int | None:
    """Size of the batch at `pos` from its length field, or None if fewer than 12 bytes."""
    if len(buf) - pos < LOG_OVERHEAD:
        return None
    return _SIZE.unpack_from(buf, pos)[1] + LOG_OVERHEAD


def crc_is_valid(buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader) -> bool:
    end = pos + header.size
    return crc32c.crc32c(memoryview(buf)[pos + ATTRIBUTES_OFFSET : end]) == header.crc


def assign_offsets(buf: bytearray, base_offset: int, leader_epoch: int) -> None:
    """Patch baseOffset and partitionLeaderEpoch of the batch at the start of `buf`.

    Neither field is covered by the CRC.
    """
    _INT64.pack_into(buf, 0, base_offset)
    _INT32.pack_into(buf, 12, leader_epoch)


def set_log_append_time(buf: bytearray, timestamp: int) -> None:
    """Mark the batch LogAppendTime with `timestamp` as maxTimestamp, and re-compute its CRC."""
    attributes = struct.unpack_from(">h", buf, ATTRIBUTES_OFFSET)[0] | TIMESTAMP_TYPE_MASK
    struct.pack_into(">h", buf, ATTRIBUTES_OFFSET, attributes)
    _INT64.pack_into(buf, MAX_TIMESTAMP_OFFSET, timestamp)
    _UINT32.pack_into(buf, CRC_OFFSET, crc32c.crc32c(memoryview(buf)[ATTRIBUTES_OFFSET:]))
