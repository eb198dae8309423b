"""Record batches (magic v2): decode the records inside a batch, and build batches.

The broker keeps batches opaque on the hot path (see DESIGN.md, decision 2). This module is
for the places that need record contents: the dump tool, compaction, validation a config
asks for, and tests that need valid batches.

The batch header (61 bytes, its fields, attribute bits and codec ids) is defined once, in
strom/protocol/batch.py, with its byte layout; this module re-exports `BatchHeader`,
`Compression` and `TimestampType` from there.

Record layout (varint = zigzag LEB128 int32, varlong = zigzag LEB128 int64; see
strom/protocol/varint.py)::

    +-------------------------------+
    | length           varint       |  bytes after this field
    | attributes       int8         |  unused (0)
    | timestampDelta   varlong      |  timestamp - baseTimestamp
    | offsetDelta      varint       |  offset - baseOffset
    | keyLength        varint       |  -1: null key
    | key              bytes        |
    | valueLength      varint       |  -1: null value
    | value            bytes        |
    | headersCount     varint       |
    | headers ...                   |  each: keyLength varint, key (UTF-8),
    +-------------------------------+        valueLength varint (-1: null), value

Compressed batches compress the whole records area as one stream: gzip; snappy (Java clients
write the xerial framing: b"\\x82SNAPPY\\x00", version int32, compatible version int32, then
chunks of int32 length + raw snappy block; librdkafka writes raw snappy; both are read, and
xerial is written); lz4 in the LZ4 *frame* format; zstd frames.

Record timestamps: CreateTime batches give baseTimestamp + timestampDelta; LogAppendTime
batches give every record the batch's maxTimestamp.

Every malformed input raises `CorruptRecordError` (a ValueError), never IndexError or a codec's
own exception.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

import crc32c

from strom.protocol.batch import (
    ATTRIBUTES_OFFSET,
    COMPRESSION_MASK,
    CONTROL_FLAG,
    DELETE_HORIZON_FLAG,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_V2,
    NO_PRODUCER_ID,
    NO_SEQUENCE,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_FLAG,
    BatchHeader,
    Compression,
    InvalidBatch,
    TimestampType,
    encode_batch,
    read_header,
)
from strom.protocol.varint import INT32_MAX_BYTES as _VARINT
from strom.protocol.varint import INT64_MAX_BYTES as _VARLONG
from strom.protocol.varint import VarintError, read_varint, write_varint

__all__ = [
    "BATCH_HEADER_SIZE",
    "LOG_OVERHEAD",
    "MAGIC_V2",
    "NO_PRODUCER_EPOCH",
    "NO_PRODUCER_ID",
    "NO_SEQUENCE",
    "NO_TIMESTAMP",
    "Batch",
    "BatchHeader",
    "Compression",
    "ControlRecordType",
    "CorruptRecordError",
    "NewRecord",
    "Record",
    "RecordHeader",
    "RecordsTooLarge",
    "TimestampType",
    "batch_crc",
    "build_batch",
    "decode_batch",
    "decode_control_record",
    "decode_records",
    "end_txn_marker",
    "iter_batches",
    "null_key_indexes",
    "read_batch_header",
    "record_times",
    "records_area",
    "with_compression",
]

# --- constants, named once (the header's in protocol/batch.py) --------------------------

BATCH_HEADER_SIZE = HEADER_SIZE  # everything up to the first record
MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD  # smallest valid batchLength (no records)
CRC_START = ATTRIBUTES_OFFSET  # the CRC covers attributes .. end of batch
_MIN_RECORD_SIZE = 7  # length, attributes, timestampDelta, offsetDelta, key, value, headers

NO_TIMESTAMP = -1
NO_PRODUCER_EPOCH = -1
NO_PARTITION_LEADER_EPOCH = -1

_INT32_MAX = 2**31 - 1

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)  # version 1, compatible version 1
_XERIAL_BLOCK_SIZE = 32 * 1024  # what snappy-java writes by default
_SNAPPY_FRAMED_MAGIC = b"\xff\x06\x00\x00sNaPpY"  # Google's framing format (read only)

_INT32 = struct.Struct(">i")
_CONTROL_KEY = struct.Struct(">hh")  # version, type
_END_TXN_VALUE = struct.Struct(">hi")  # version, coordinatorEpoch

# Malformed batches raise protocol/batch.py's InvalidBatch; this module's name for it.
CorruptRecordError = InvalidBatch
read_batch_header = read_header  # the one header parser


class RecordsTooLarge(InvalidBatch):
    """A batch whose records decompress to more than the caller allows."""


class ControlRecordType(IntEnum):
    """The type in a control record's key (version int16, type int16)."""

    ABORT = 0
    COMMIT = 1
    LEADER_CHANGE = 2
    SNAPSHOT_HEADER = 3
    SNAPSHOT_FOOTER = 4
    KRAFT_VERSION = 5
    KRAFT_VOTERS = 6


# --- results ------------------------------------------------------------------------------


RecordHeader = tuple[str, bytes | None]  # (key, value); value None is null


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record. `key`/`value` None mean null (length -1)."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[RecordHeader, ...] = ()
    attributes: int = 0


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A record to write with `build_batch`; its offset is its place in the batch.

    timestamp None takes `build_batch(default_timestamp=...)`.
    """

    value: bytes | None
    key: bytes | None = None
    headers: tuple[RecordHeader, ...] = ()
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    header: BatchHeader
    records: tuple[Record, ...]


# --- compression --------------------------------------------------------------------------


def _decompress(codec: Compression, data: bytes, max_size: int | None = None) -> bytes:
    """The records area of a compressed batch. With `max_size`, no more than that many bytes
    are ever produced (nor allocated beyond it): a larger result raises RecordsTooLarge."""
    import cramjam

    try:
        if codec is Compression.SNAPPY:
            return _snappy_decompress(data, cramjam, max_size)
        module = {Compression.GZIP: cramjam.gzip, Compression.LZ4: cramjam.lz4,
                  Compression.ZSTD: cramjam.zstd}.get(codec)
        if module is None:
            raise AssertionError(codec)
        if max_size is None:
            return bytes(module.decompress(data))
        return _decompress_into(module.decompress_into, data, max_size, codec, cramjam)
    except CorruptRecordError:
        raise
    except Exception as exc:  # cramjam.DecompressionError and friends
        raise CorruptRecordError(f"cannot decompress {codec} records: {exc}") from exc


def _decompress_into(decompress_into, data: bytes, max_size: int, codec: Compression,
                     cramjam) -> bytearray:
    """One native call into a buffer one byte larger than allowed: the codec stops as soon as
    the buffer is full, so a "bomb" costs max_size bytes, and the time to write them."""
    out = bytearray(max_size + 1)
    try:
        n = decompress_into(data, out)
    except cramjam.DecompressionError as exc:
        if "failed to write whole buffer" not in str(exc):  # else: the buffer is full
            raise
        n = max_size + 1
    if n > max_size:
        raise RecordsTooLarge(f"{codec} records decompress to more than {max_size} bytes")
    del out[n:]
    return out


def _snappy_decompress(data: bytes, cramjam, max_size: int | None) -> bytes:
    budget = [max_size]

    def raw(block) -> bytes:
        if budget[0] is not None:  # raw snappy states its decompressed length up front
            need = cramjam.snappy.decompress_raw_len(block)
            if need > budget[0]:
                raise RecordsTooLarge(f"snappy records decompress to more than {max_size} bytes")
            budget[0] -= need
        return bytes(cramjam.snappy.decompress_raw(block))

    if data.startswith(_XERIAL_MAGIC):
        if len(data) < len(_XERIAL_HEADER):
            raise CorruptRecordError("truncated xerial snappy header")
        parts = []
        pos = len(_XERIAL_HEADER)
        end = len(data)
        while pos < end:
            if pos + 4 > end:
                raise CorruptRecordError("truncated xerial snappy block length")
            (length,) = _INT32.unpack_from(data, pos)
            pos += 4
            if length < 0 or pos + length > end:
                raise CorruptRecordError("truncated xerial snappy block")
            parts.append(raw(data[pos:pos + length]))
            pos += length
        return b"".join(parts)
    if data.startswith(_SNAPPY_FRAMED_MAGIC):
        if max_size is None:
            return bytes(cramjam.snappy.decompress(data))
        return _decompress_into(cramjam.snappy.decompress_into, data, max_size,
                                Compression.SNAPPY, cramjam)
    return raw(data)


def _compress(codec: Compression, data: bytes, snappy_xerial: bool) -> bytes:
    import cramjam

    if codec is Compression.GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec is Compression.SNAPPY:
        if not snappy_xerial:
            return bytes(cramjam.snappy.compress_raw(data))
        out = bytearray(_XERIAL_HEADER)
        for start in range(0, len(data), _XERIAL_BLOCK_SIZE):
            block = bytes(cramjam.snappy.compress_raw(data[start:start + _XERIAL_BLOCK_SIZE]))
            out += _INT32.pack(len(block))
            out += block
        return bytes(out)
    if codec is Compression.LZ4:
        return bytes(cramjam.lz4.compress(data))
    if codec is Compression.ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise AssertionError(codec)


# --- decoding -----------------------------------------------------------------------------


def batch_crc(buf, pos: int = 0, size: int | None = None) -> int:
    """CRC-32C of a batch's attributes .. end (what the crc field must hold).

    `size` defaults to the batch's own batchLength + 12.
    """
    if size is None:
        if len(buf) - pos < LOG_OVERHEAD:
            raise CorruptRecordError("batch too short to hold its length")
        size = _INT32.unpack_from(buf, pos + 8)[0] + LOG_OVERHEAD
    if size < BATCH_HEADER_SIZE or pos + size > len(buf):
        raise CorruptRecordError(f"batch of {size} bytes does not fit the buffer")
    with memoryview(buf) as view, view[pos + CRC_START:pos + size] as covered:
        return crc32c.crc32c(covered)


def iter_batches(buf, start: int = 0, end: int | None = None) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) for each complete batch from `start`, shallowly.

    Stops quietly at the first position that does not hold a complete, plausible batch (a torn
    tail, preallocated zeros, another magic): the caller sees where by the last position +
    size it got. CRCs are not checked here.
    """
    end = len(buf) if end is None else min(end, len(buf))
    pos = start
    while end - pos >= BATCH_HEADER_SIZE:
        try:
            header = read_batch_header(buf, pos)
        except CorruptRecordError:
            return
        if pos + header.size > end:
            return
        yield pos, header
        pos += header.size


def records_area(buf, pos: int = 0, header: BatchHeader | None = None,
                 verify_crc: bool = True, max_size: int | None = None) -> bytes | bytearray:
    """The records area of the batch at `pos`, decompressed; each of its `recordsCount`
    records takes at least 7 bytes. With `max_size`, a batch whose records take more raises
    RecordsTooLarge, having decompressed no more than that."""
    if header is None:
        header = read_batch_header(buf, pos)
    end = pos + header.size
    if end > len(buf):
        raise CorruptRecordError(
            f"batch of {header.size} bytes at position {pos} is truncated "
            f"({len(buf) - pos} bytes available)")
    if verify_crc:
        actual = batch_crc(buf, pos, header.size)
        if actual != header.crc:
            raise CorruptRecordError(
                f"batch at offset {header.base_offset} has CRC {header.crc}, computed {actual}")
    count = header.records_count
    if count < 0:
        raise CorruptRecordError(f"invalid record count {count}")
    if max_size is not None and count * _MIN_RECORD_SIZE > max_size:
        raise RecordsTooLarge(f"{count} records cannot fit in {max_size} bytes")
    body = bytes(buf[pos + BATCH_HEADER_SIZE:end])
    codec = header.compression
    if codec is not Compression.NONE:
        body = _decompress(codec, body, max_size)
    elif max_size is not None and len(body) > max_size:
        raise RecordsTooLarge(f"records of {len(body)} bytes are more than {max_size} bytes")
    # Each record takes at least 7 bytes; refuse counts that cannot fit before allocating.
    if count * _MIN_RECORD_SIZE > len(body):
        raise CorruptRecordError(
            f"record count {count} does not fit in {len(body)} bytes of records")
    return body


def decode_records(buf, pos: int = 0, header: BatchHeader | None = None,
                   verify_crc: bool = True, max_size: int | None = None) -> tuple[Record, ...]:
    """Decode (and decompress) the records of the batch at `pos` (`max_size`: see
    `records_area`)."""
    if header is None:
        header = read_batch_header(buf, pos)
    body = records_area(buf, pos, header, verify_crc, max_size)
    return _parse_records(bytes(body), header, header.records_count)


def null_key_indexes(area: bytes | bytearray, header: BatchHeader) -> list[int]:
    """Check every record of a records area (as `decode_records` does) without building
    them; return the indexes of the records whose key is null."""
    return [i for i, (_, _, key_length) in enumerate(
        _walk_records(area, header, header.records_count, False)) if key_length < 0]


def record_times(area: bytes | bytearray, header: BatchHeader) -> Iterator[tuple[int, int]]:
    """(offset, timestamp) of each record of a records area, in order, checked as
    `decode_records` does but building nothing; stop early at will."""
    for offset, timestamp, _ in _walk_records(area, header, header.records_count, False):
        yield offset, timestamp


def with_compression(buf, header: BatchHeader, codec: Compression | int,
                     area: bytes | bytearray) -> bytes:
    """The batch at the start of `buf` with its records area `area` (decompressed) compressed
    with `codec` instead: every header field but the codec bits is kept, the CRC is new.
    The records are re-encoded as they are (their deltas do not depend on the codec)."""
    codec = Compression(codec)
    payload = bytes(area) if codec is Compression.NONE else _compress(codec, bytes(area), True)
    attributes = (header.attributes & ~COMPRESSION_MASK) | int(codec)
    return encode_batch(dataclasses.replace(header, attributes=attributes), payload)


def decode_batch(buf, pos: int = 0, verify_crc: bool = True,
                 max_size: int | None = None) -> Batch:
    """Header and records of the batch at `pos` (`max_size`: see `records_area`)."""
    header = read_batch_header(buf, pos)
    return Batch(header, decode_records(buf, pos, header, verify_crc=verify_crc,
                                        max_size=max_size))


def _parse_records(data: bytes | bytearray, header: BatchHeader, count: int
                   ) -> tuple[Record, ...]:
    """The records, every field checked to stay inside its record and the records area."""
    return tuple(_walk_records(data, header, count, True))


def _walk_records(data: bytes | bytearray, header: BatchHeader, count: int, build: bool):
    """Each record in turn: a Record when `build`, else (offset, timestamp, keyLength) with
    nothing copied. Every field is checked to stay inside its record, and once all `count`
    are read, that no bytes are left; malformed bytes raise CorruptRecordError."""
    try:
        yield from _walk(data, header, count, build)
    except VarintError as e:
        raise CorruptRecordError(str(e)) from None


def _walk(data: bytes | bytearray, header: BatchHeader, count: int, build: bool):
    base_offset = header.base_offset
    base_timestamp = header.base_timestamp
    append_time = (header.max_timestamp
                   if header.timestamp_type is TimestampType.LOG_APPEND_TIME else None)
    end = len(data)
    pos = 0
    for _ in range(count):
        length, pos = read_varint(data, pos, end, _VARINT)
        record_start = pos
        record_end = pos + length
        if length <= 0 or record_end > end:
            raise CorruptRecordError(
                f"record of {length} bytes at byte {pos} does not fit the batch ({end} bytes)")
        # Every field below must stay inside [record_start, record_end).
        attributes = data[pos]
        pos += 1
        timestamp_delta, pos = read_varint(data, pos, record_end, _VARLONG)
        offset_delta, pos = read_varint(data, pos, record_end, _VARINT)
        key_length, key, pos = _field(data, pos, record_end, build, "record key")
        _length, value, pos = _field(data, pos, record_end, build, "record value")
        header_count, pos = read_varint(data, pos, record_end, _VARINT)
        if header_count < 0:
            raise CorruptRecordError(f"invalid negative header count {header_count}")
        headers = []
        for _ in range(header_count):
            hkey_length, hkey, pos = _field(data, pos, record_end, build, "header key")
            if hkey_length < 0:
                raise CorruptRecordError(f"invalid negative header key size {hkey_length}")
            _length, hvalue, pos = _field(data, pos, record_end, build, "header value")
            if build:
                headers.append((hkey.decode("utf-8", "replace"), hvalue))
        if pos != record_end:
            raise CorruptRecordError(
                f"record declared {length} bytes but its fields take {pos - record_start}")
        timestamp = append_time if append_time is not None else base_timestamp + timestamp_delta
        if build:
            yield Record(base_offset + offset_delta, timestamp, key, value, tuple(headers),
                         attributes)
        else:
            yield base_offset + offset_delta, timestamp, key_length
    if pos != end:
        raise CorruptRecordError(
            f"{end - pos} bytes left in the batch after reading all {count} records")


def _field(data: bytes | bytearray, pos: int, record_end: int, build: bool, what: str
           ) -> tuple[int, bytes | bytearray | None, int]:
    """(length, bytes, next position) of the varint-length-prefixed field at `pos` (key,
    value, header key or value); a negative length is null. The bytes are copied only
    when `build`; a field that overruns its record raises CorruptRecordError."""
    length, pos = read_varint(data, pos, record_end, _VARINT)
    if length < 0:
        return length, None, pos
    field_end = pos + length
    if field_end > record_end:
        raise CorruptRecordError(f"{what} overruns the record")
    return length, data[pos:field_end] if build else None, field_end


# --- control records ----------------------------------------------------------------------


def decode_control_record(record: Record) -> tuple[ControlRecordType | int, int | None]:
    """(type, coordinatorEpoch) of a record in a control batch.

    The type is a ControlRecordType, or the raw int for a type this module does not know.
    coordinatorEpoch is given for ABORT/COMMIT markers, else None.
    """
    if record.key is None or len(record.key) < _CONTROL_KEY.size:
        raise CorruptRecordError("control record key must hold version int16 + type int16")
    _version, type_id = _CONTROL_KEY.unpack_from(record.key)
    try:
        kind: ControlRecordType | int = ControlRecordType(type_id)
    except ValueError:
        return type_id, None
    if kind in (ControlRecordType.ABORT, ControlRecordType.COMMIT):
        if record.value is None or len(record.value) < _END_TXN_VALUE.size:
            raise CorruptRecordError("end transaction marker value is too short")
        _vversion, coordinator_epoch = _END_TXN_VALUE.unpack_from(record.value)
        return kind, coordinator_epoch
    return kind, None


def end_txn_marker(commit: bool, coordinator_epoch: int, timestamp: int | None = None) -> NewRecord:
    """The single record of a COMMIT/ABORT control batch (build it with is_control=True)."""
    kind = ControlRecordType.COMMIT if commit else ControlRecordType.ABORT
    return NewRecord(key=_CONTROL_KEY.pack(0, kind), value=_END_TXN_VALUE.pack(0, coordinator_epoch),
                     timestamp=timestamp)


# --- encoding -----------------------------------------------------------------------------


def _encode_bytes(out: bytearray, data: bytes | None, what: str) -> None:
    if data is None:
        write_varint(out, -1)
        return
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes or None, not {type(data).__name__}")
    write_varint(out, len(data))
    out += data


def build_batch(
    records: Sequence[NewRecord | Record],
    base_offset: int = 0,
    compression: Compression | int = Compression.NONE,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    timestamp_type: TimestampType | int = TimestampType.CREATE_TIME,
    is_transactional: bool = False,
    is_control: bool = False,
    partition_leader_epoch: int = 0,
    default_timestamp: int = NO_TIMESTAMP,
    max_timestamp: int | None = None,
    last_offset_delta: int | None = None,
    delete_horizon_ms: int | None = None,
    snappy_xerial: bool = True,
) -> bytes:
    """Encode one v2 batch with a correct CRC-32C.

    A `NewRecord` gets offset base_offset + its index in `records`; a `Record` keeps its own
    offset (so a compacted batch keeps its gaps). baseTimestamp is the first record's
    timestamp (or `delete_horizon_ms`, which also sets attribute bit 6); maxTimestamp is the
    largest record timestamp unless `max_timestamp` is given (for LogAppendTime, pass the
    append time). lastOffsetDelta is the last record's delta unless `last_offset_delta` is
    given (compaction keeps the original). Snappy is written with xerial framing unless
    `snappy_xerial` is False (raw, as librdkafka writes).
    """
    codec = Compression(compression)
    ts_type = TimestampType(timestamp_type)

    resolved = []  # (offset_delta, timestamp, record)
    for index, rec in enumerate(records):
        if isinstance(rec, Record):
            resolved.append((rec.offset - base_offset, rec.timestamp, rec))
        elif isinstance(rec, NewRecord):
            ts = default_timestamp if rec.timestamp is None else rec.timestamp
            resolved.append((index, ts, rec))
        else:
            raise TypeError(f"records must be NewRecord or Record, not {type(rec).__name__}")

    if delete_horizon_ms is not None:
        base_timestamp = delete_horizon_ms
    elif resolved:
        base_timestamp = resolved[0][1]
    else:
        base_timestamp = NO_TIMESTAMP
    if max_timestamp is None:
        max_timestamp = max((ts for _, ts, _ in resolved), default=NO_TIMESTAMP)
    if last_offset_delta is None:
        last_offset_delta = resolved[-1][0] if resolved else 0

    body = bytearray()
    scratch = bytearray()
    for offset_delta, ts, rec in resolved:
        if not 0 <= offset_delta <= _INT32_MAX:
            raise ValueError(f"record offset delta {offset_delta} out of range")
        scratch.clear()
        scratch.append(getattr(rec, "attributes", 0) & 0xFF)
        write_varint(scratch, ts - base_timestamp)
        write_varint(scratch, offset_delta)
        _encode_bytes(scratch, rec.key, "key")
        _encode_bytes(scratch, rec.value, "value")
        write_varint(scratch, len(rec.headers))
        for hkey, hvalue in rec.headers:
            if not isinstance(hkey, str):
                raise TypeError(f"header key must be str, not {type(hkey).__name__}")
            _encode_bytes(scratch, hkey.encode("utf-8"), "header key")
            _encode_bytes(scratch, hvalue, "header value")
        write_varint(body, len(scratch))
        body += scratch

    payload = bytes(body) if codec is Compression.NONE else _compress(codec, bytes(body),
                                                                     snappy_xerial)
    attributes = int(codec)
    if ts_type is TimestampType.LOG_APPEND_TIME:
        attributes |= TIMESTAMP_TYPE_MASK
    if is_transactional:
        attributes |= TRANSACTIONAL_FLAG
    if is_control:
        attributes |= CONTROL_FLAG
    if delete_horizon_ms is not None:
        attributes |= DELETE_HORIZON_FLAG

    return encode_batch(BatchHeader(
        base_offset, 0, partition_leader_epoch, MAGIC_V2, 0, attributes, last_offset_delta,
        base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence,
        len(resolved)), payload)
