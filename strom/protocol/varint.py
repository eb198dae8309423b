"""Kafka's variable-length integers, the one implementation every layer uses.

    unsigned varint   LEB128: 7 bits a byte, least significant group first, the high bit
                      set on every byte but the last. Lengths and counts of the flexible
                      (compact) protocol versions, written as n + 1 where null is 0.
    varint / varlong  zigzag-encoded int32 / int64 ((n << 1) ^ (n >> 63)), then LEB128:
                      fields of records inside a v2 record batch. At most 5 bytes for an
                      int32, 10 for an int64.

    value   unsigned   zigzag
    0       00         00
    -1      -          01
    1       01         02
    300     ac 02      d8 04

Readers take (buffer, position, end) and return (value, next position); they never read at
or past `end`, and raise VarintError (a ValueError) for a truncated, over-long or
out-of-range number.
"""

from __future__ import annotations

__all__ = [
    "INT32_MAX_BYTES",
    "INT64_MAX_BYTES",
    "VarintError",
    "read_uvarint",
    "read_varint",
    "uvarint",
    "varint",
    "write_uvarint",
    "write_varint",
]

INT32_MAX_BYTES = 5  # a varint (int32) takes at most 5 bytes
INT64_MAX_BYTES = 10  # a varlong (int64) at most 10

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT64 = 0xFFFFFFFFFFFFFFFF


class VarintError(ValueError):
    """Bytes that are not a valid varint where one was expected."""


def write_uvarint(out: bytearray, value: int) -> None:
    """Append the unsigned LEB128 of `value` (0 .. 2**64 - 1)."""
    if not 0 <= value <= _UINT64:
        raise ValueError(f"{value} does not fit in an unsigned varint")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def uvarint(value: int) -> bytes:
    """The unsigned LEB128 of `value`, as bytes."""
    out = bytearray()
    write_uvarint(out, value)
    return bytes(out)


def write_varint(out: bytearray, value: int) -> None:
    """Append the zigzag LEB128 of an int64 (int32 values encode identically)."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{value} does not fit in a varlong")
    write_uvarint(out, ((value << 1) ^ (value >> 63)) & _UINT64)


def varint(value: int) -> bytes:
    """The zigzag LEB128 of an int64, as bytes."""
    out = bytearray()
    write_varint(out, value)
    return bytes(out)


def read_uvarint(data, pos: int, end: int, max_bytes: int = INT32_MAX_BYTES) -> tuple[int, int]:
    """Unsigned LEB128 at `pos`, in at most `max_bytes` bytes -> (value, next position)."""
    value = 0
    shift = 0
    for _ in range(max_bytes):
        if pos >= end:
            raise VarintError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
    raise VarintError(f"varint longer than {max_bytes} bytes")


def read_varint(data, pos: int, end: int, max_bytes: int = INT32_MAX_BYTES) -> tuple[int, int]:
    """Zigzag LEB128 at `pos` -> (value, next position); `max_bytes` is INT32_MAX_BYTES for a
    varint (int32), INT64_MAX_BYTES for a varlong (int64), and the value must fit."""
    raw, pos = read_uvarint(data, pos, end, max_bytes)
    value = (raw >> 1) ^ -(raw & 1)
    if max_bytes == INT32_MAX_BYTES:
        if not _INT32_MIN <= value <= _INT32_MAX:
            raise VarintError("varint out of int32 range")
    elif not _INT64_MIN <= value <= _INT64_MAX:
        raise VarintError("varlong out of int64 range")
    return value, pos
