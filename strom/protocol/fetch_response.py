"""The Fetch response, framed by hand so record bytes go from segment files to the socket.

Every other response is written by kio; this one is split into `parts`: bytes we encode,
and `FileSlice`-like objects the connection sends with sendfile (or pread). Layout per
version (fields in Kafka's FetchResponse.json):

    ResponseHeader          correlation_id int32 [v12+: tagged fields]
    throttle_time_ms        int32
    error_code              int16             v7+
    session_id              int32             v7+
    responses               array             v12+ compact
      topic                 string            v0-12 (v12 compact)
      topic_id              uuid              v13+
      partitions            array
        partition_index     int32
        error_code          int16
        high_watermark      int64
        last_stable_offset  int64
        log_start_offset    int64             v5+
        aborted_transactions nullable array   producer_id int64, first_offset int64
        preferred_read_replica int32          v11+
        records             nullable bytes    v12+ compact (uvarint length + 1)
        [tagged fields]                       v12+: 0 diverging_epoch, 1 current_leader
      [tagged fields]
    [tagged fields]
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_PART_HEAD = struct.Struct(">ihqq")
_I64 = struct.Struct(">q")


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class FetchPartitionData:
    partition_index: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    records: Any | None  # an object with .size (a FileSlice), bytes, or None
    aborted_transactions: Sequence[tuple[int, int]] | None = None
    preferred_read_replica: int = -1
    current_leader: tuple[int, int] | None = None  # (leader id, epoch) for NOT_LEADER errors
    diverging_epoch: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class FetchTopicData:
    name: str
    topic_id: uuid.UUID
    partitions: Sequence[FetchPartitionData]


def encode(version: int, correlation_id: int, throttle_ms: int, error_code: int,
           session_id: int, topics: Sequence[FetchTopicData]) -> tuple[list[Any], int]:
    """The response as parts (bytes and record slices) and its total size (with the
    4-byte frame size prefix)."""
    flexible = version >= 12
    parts: list[Any] = []
    buf = bytearray()
    buf += _I32.pack(correlation_id)
    if flexible:
        buf += b"\0"
    buf += _I32.pack(throttle_ms)
    if version >= 7:
        buf += _I16.pack(error_code)
        buf += _I32.pack(session_id)
    buf += _uvarint(len(topics) + 1) if flexible else _I32.pack(len(topics))
    for t in topics:
        if version >= 13:
            buf += t.topic_id.bytes
        else:
            name = t.name.encode()
            buf += _uvarint(len(name) + 1) if flexible else _I16.pack(len(name))
            buf += name
        buf += _uvarint(len(t.partitions) + 1) if flexible else _I32.pack(len(t.partitions))
        for p in t.partitions:
            buf += _PART_HEAD.pack(p.partition_index, p.error_code, p.high_watermark,
                                   p.last_stable_offset)
            if version >= 5:
                buf += _I64.pack(p.log_start_offset)
            aborted = p.aborted_transactions
            if aborted is None:
                buf += b"\0" if flexible else _I32.pack(-1)
            else:
                buf += _uvarint(len(aborted) + 1) if flexible else _I32.pack(len(aborted))
                for producer_id, first_offset in aborted:
                    buf += _I64.pack(producer_id) + _I64.pack(first_offset)
                    if flexible:
                        buf += b"\0"
            if version >= 11:
                buf += _I32.pack(p.preferred_read_replica)
            records = p.records
            size = 0 if records is None else (len(records) if isinstance(records, bytes | bytearray)
                                              else records.size)
            if records is None:
                buf += b"\0" if flexible else _I32.pack(-1)
            else:
                buf += _uvarint(size + 1) if flexible else _I32.pack(size)
                if size:
                    if isinstance(records, bytes | bytearray):
                        buf += records
                    else:
                        parts.append(bytes(buf))
                        parts.append(records)
                        buf = bytearray()
            if flexible:
                tags = bytearray()
                count = 0
                if p.diverging_epoch is not None:
                    body = _I32.pack(p.diverging_epoch[0]) + _I64.pack(p.diverging_epoch[1]) + b"\0"
                    tags += _uvarint(0) + _uvarint(len(body)) + body
                    count += 1
                if p.current_leader is not None:
                    body = _I32.pack(p.current_leader[0]) + _I32.pack(p.current_leader[1]) + b"\0"
                    tags += _uvarint(1) + _uvarint(len(body)) + body
                    count += 1
                buf += _uvarint(count) + tags
        if flexible:
            buf += b"\0"
    if flexible:
        buf += b"\0"
    parts.append(bytes(buf))
    total = sum(len(x) if isinstance(x, bytes) else x.size for x in parts)
    parts.insert(0, _I32.pack(total))
    return parts, total + 4
