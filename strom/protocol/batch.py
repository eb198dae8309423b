"""A view of the v2 record-batch header, the only part of a batch the hot path reads.

    offset  size  field
    0       8     baseOffset            patched by the broker on append
    8       4     batchLength           bytes after this field
    12      4     partitionLeaderEpoch  patched by the broker on append
    16      1     magic                 2
    17      4     crc                   CRC-32C of bytes 21..end
    21      2     attributes            bits 0-2 codec, 3 timestamp type, 4 transactional,
                                        5 control, 6 delete horizon
    23      4     lastOffsetDelta
    27      8     baseTimestamp
    35      8     maxTimestamp          patched (with the CRC) for LogAppendTime
    43      8     producerId
    51      2     producerEpoch
    53      4     baseSequence
    57      4     recordsCount
    61            records...

Records stay opaque: they are decoded only where a feature needs them (see log/records.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

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

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1

_HEADER = struct.Struct(">qiibIhiqqqhii")
_INT64 = struct.Struct(">q")
_INT32 = struct.Struct(">i")
_UINT32 = struct.Struct(">I")
_SIZE = struct.Struct(">qi")


class InvalidBatch(ValueError):
    """Bytes that are not a well-formed v2 record batch."""


@dataclass(frozen=True, slots=True)
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
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

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


def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """The header of the batch at `pos`; raises InvalidBatch if it is not a v2 header."""
    if len(buf) - pos < HEADER_SIZE:
        raise InvalidBatch(f"{len(buf) - pos} bytes is shorter than a batch header")
    header = BatchHeader(*_HEADER.unpack_from(buf, pos))
    if header.magic != 2:
        raise InvalidBatch(f"unsupported record batch magic {header.magic}")
    if header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
        raise InvalidBatch(f"batch length {header.batch_length} is too small")
    return header


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
