"""Producer-state snapshot files (`<offset>.snapshot`, Kafka's format, version 1).

A snapshot holds the producer state of a partition as it was at `offset` (every batch below
it applied), so loading replays only the batches from there on. Big-endian:

    version    int16    1
    crc        uint32   CRC-32C of every byte after this field
    entries    int32 count, then per producer (46 bytes each):
        producer_id                int64
        epoch                      int16
        last_sequence              int32   last sequence of its last batch (-1: none)
        last_offset                int64   last offset of its last data batch (-1: none)
        offset_delta               int32   last_offset - first offset of that batch
        timestamp                  int64   max timestamp of its last batch
        coordinator_epoch          int32   of the last marker it got (-1: none)
        current_txn_first_offset   int64   first offset of its ongoing transaction (-1: none)

Entries are written in producer id order (Kafka writes its map's order; readers do not care).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from crc32c import crc32c

VERSION = 1
_HEAD = struct.Struct(">hI")
_COUNT = struct.Struct(">i")
_ENTRY = struct.Struct(">qhiqiqiq")


class CorruptSnapshot(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    producer_id: int
    epoch: int
    last_sequence: int
    last_offset: int
    offset_delta: int
    timestamp: int
    coordinator_epoch: int
    current_txn_first_offset: int


def encode(entries: list[SnapshotEntry]) -> bytes:
    body = bytearray(_COUNT.pack(len(entries)))
    for e in sorted(entries, key=lambda e: e.producer_id):
        body += _ENTRY.pack(e.producer_id, e.epoch, e.last_sequence, e.last_offset,
                            e.offset_delta, e.timestamp, e.coordinator_epoch,
                            e.current_txn_first_offset)
    return _HEAD.pack(VERSION, crc32c(bytes(body))) + bytes(body)


def decode(data: bytes) -> list[SnapshotEntry]:
    """The entries of a snapshot file's bytes; CorruptSnapshot when it does not check out."""
    if len(data) < _HEAD.size + _COUNT.size:
        raise CorruptSnapshot(f"snapshot of {len(data)} bytes is too short")
    version, crc = _HEAD.unpack_from(data, 0)
    if version != VERSION:
        raise CorruptSnapshot(f"snapshot file version {version} is not {VERSION}")
    if crc32c(data[_HEAD.size:]) != crc:
        raise CorruptSnapshot("snapshot file failed its CRC-32C check")
    (count,) = _COUNT.unpack_from(data, _HEAD.size)
    pos = _HEAD.size + _COUNT.size
    if count < 0 or len(data) != pos + count * _ENTRY.size:
        raise CorruptSnapshot(f"snapshot of {len(data)} bytes does not hold {count} entries")
    return [SnapshotEntry(*_ENTRY.unpack_from(data, pos + i * _ENTRY.size))
            for i in range(count)]
