"""The Fetch response, framed by hand so record bytes go from segment files to the socket,
and read by hand on the follower so they go from the socket to its log without a copy.

Every other response is written by kio (but the error-free Produce answer of several
partitions, strom/protocol/produce_response.py); this one is split into `parts`: bytes
we encode, and `FileSlice`-like objects the connection sends with sendfile (or pread).
`decode` is the follower's side (flexible versions, 12+): every field a leader may send
is parsed or skipped (tagged fields included) and each partition's records stay a view
into the frame.
Layout per version (fields in Kafka's FetchResponse.json):

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
        records             nullable bytes    v12+ compact (uvarint length + 1); never
                                              sent null: librdkafka fails the whole
                                              response on a null records field
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

from strom.protocol.varint import read_uvarint, uvarint

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_PART_HEAD = struct.Struct(">ihqq")
_I64 = struct.Struct(">q")


_ZERO_UUID = bytes(16)  # kio reads the all-zero topic id as None
_MINUS_ONE = _I32.pack(-1)  # a null array's length; no preferred read replica


@dataclass(slots=True)
class FetchPartitionData:
    partition_index: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    records: Any | None  # an object with .size (a FileSlice), bytes; None is sent as empty
    aborted_transactions: Sequence[tuple[int, int]] | None = None
    preferred_read_replica: int = -1
    current_leader: tuple[int, int] | None = None  # (leader id, epoch) for NOT_LEADER errors
    diverging_epoch: tuple[int, int] | None = None


@dataclass(slots=True)
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
    buf += uvarint(len(topics) + 1) if flexible else _I32.pack(len(topics))
    for t in topics:
        if version >= 13:
            buf += t.topic_id.bytes if t.topic_id is not None else _ZERO_UUID
        else:
            name = t.name.encode()
            buf += uvarint(len(name) + 1) if flexible else _I16.pack(len(name))
            buf += name
        buf += uvarint(len(t.partitions) + 1) if flexible else _I32.pack(len(t.partitions))
        for p in t.partitions:
            buf += _PART_HEAD.pack(p.partition_index, p.error_code, p.high_watermark,
                                   p.last_stable_offset)
            if version >= 5:
                buf += _I64.pack(p.log_start_offset)
            aborted = p.aborted_transactions
            if aborted is None:
                buf += b"\0" if flexible else _I32.pack(-1)
            else:
                buf += uvarint(len(aborted) + 1) if flexible else _I32.pack(len(aborted))
                for producer_id, first_offset in aborted:
                    buf += _I64.pack(producer_id) + _I64.pack(first_offset)
                    if flexible:
                        buf += b"\0"
            if version >= 11:
                buf += _I32.pack(p.preferred_read_replica)
            records = p.records
            # an empty record set, never null (librdkafka rejects a null one)
            size = 0 if records is None else (len(records) if isinstance(records, bytes | bytearray)
                                              else records.size)
            buf += uvarint(size + 1) if flexible else _I32.pack(size)
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
                    tags += uvarint(0) + uvarint(len(body)) + body
                    count += 1
                if p.current_leader is not None:
                    body = _I32.pack(p.current_leader[0]) + _I32.pack(p.current_leader[1]) + b"\0"
                    tags += uvarint(1) + uvarint(len(body)) + body
                    count += 1
                buf += uvarint(count) + tags
        if flexible:
            buf += b"\0"
    if flexible:
        buf += b"\0"
    parts.append(bytes(buf))
    total = sum(len(x) if isinstance(x, bytes) else x.size for x in parts)
    parts.insert(0, _I32.pack(total))
    return parts, total + 4


# the bytes between the correlation id and a lone partition's fields, by (version, topic,
# topic id, session id): the same for every answer `encode_one` gives a consumer tailing its
# partition
_one_heads: dict[tuple[int, str, uuid.UUID | None, int], bytes] = {}
MAX_ONE_HEADS = 1024


def encode_one(version: int, correlation_id: int, topic: str, topic_id: uuid.UUID | None,
               partition: int, high_watermark: int, last_stable_offset: int,
               log_start_offset: int, records: Any, session_id: int = 0
               ) -> tuple[list[Any], int]:
    """`encode` of the commonest answer, one partition without errors, throttle or
    aborted-transaction list (read_uncommitted), sessionless or in session `session_id`:
    the same bytes, the fields before the partition's kept per topic and session.
    `records`: b"" or a FileSlice (its bytes go in the parts when it holds them)."""
    flexible = version >= 12
    head = _one_heads.get((version, topic, topic_id, session_id))
    if head is None:
        buf = bytearray(b"\0" if flexible else b"")
        buf += _I32.pack(0)  # throttle_time_ms
        if version >= 7:
            buf += _I16.pack(0) + _I32.pack(session_id)  # error_code, session_id
        buf += b"\x02" if flexible else _I32.pack(1)
        if version >= 13:
            buf += topic_id.bytes if topic_id is not None else _ZERO_UUID
        else:
            name = topic.encode()
            buf += uvarint(len(name) + 1) if flexible else _I16.pack(len(name))
            buf += name
        buf += b"\x02" if flexible else _I32.pack(1)
        if len(_one_heads) >= MAX_ONE_HEADS:
            _one_heads.clear()
        head = _one_heads[(version, topic, topic_id, session_id)] = bytes(buf)
    body = _PART_HEAD.pack(partition, 0, high_watermark, last_stable_offset)
    if version >= 5:
        body += _I64.pack(log_start_offset)
    body += b"\0" if flexible else _MINUS_ONE  # aborted_transactions: null
    if version >= 11:
        body += _MINUS_ONE  # preferred_read_replica
    size = records.size if records else 0
    body += uvarint(size + 1) if flexible else _I32.pack(size)
    tail = b"\0\0\0" if flexible else b""  # the partition's, topic's, response's tags
    total = 4 + len(head) + len(body) + size + len(tail)
    first = _I32.pack(total) + _I32.pack(correlation_id) + head + body
    if not size:
        return [first + tail], total + 4
    data = records.data
    if data is not None:
        return [first + data + tail], total + 4
    return ([first, records, tail] if tail else [first, records]), total + 4


# --- the client side: a follower reading the leader's answer --------------------------------
@dataclass(slots=True)
class FetchedPartition:
    """One partition of a decoded Fetch response; `records` is a view into the frame (no
    copy), None when the leader sent null records."""

    topic: str | None  # v12; None from v13, which names topics by id
    topic_id: uuid.UUID | None  # v13+
    partition_index: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    records: memoryview | None


@dataclass(slots=True)
class FetchResponseView:
    throttle_time_ms: int
    error_code: int
    session_id: int
    partitions: list[FetchedPartition]


class _Cursor:
    """Reads the primitives of a flexible message from a buffer, bounds-checked."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)

    def take(self, n: int) -> int:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise ValueError(f"{n} bytes wanted at {pos}, {self.end - pos} left")
        self.pos = pos + n
        return pos

    def uvarint(self) -> int:
        value, self.pos = read_uvarint(self.buf, self.pos, self.end)
        return value

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.take(self.uvarint())


_RESPONSE_HEAD = struct.Struct(">ihi")  # throttle_time_ms, error_code, session_id
_PART_FIXED = struct.Struct(">ihqqq")  # index, error, hw, last stable, log start


def decode(frame: bytes | bytearray | memoryview, version: int) -> FetchResponseView:
    """Decode a Fetch response frame (without its size prefix; response header v1 first)
    of a flexible version (12+), leaving each partition's records as a view into `frame`.
    Raises ValueError for a frame that does not parse."""
    if version < 12:
        raise ValueError(f"Fetch v{version} is not a flexible version")
    c = _Cursor(memoryview(frame))
    buf = c.buf
    c.take(4)  # correlation id (checked by the connection)
    c.skip_tagged_fields()
    throttle_ms, error_code, session_id = _RESPONSE_HEAD.unpack_from(buf, c.take(10))
    out: list[FetchedPartition] = []
    for _ in range(c.uvarint() - 1):
        name: str | None = None
        topic_id: uuid.UUID | None = None
        if version >= 13:
            start = c.take(16)
            topic_id = uuid.UUID(bytes=bytes(buf[start:start + 16]))
        else:
            n = c.uvarint() - 1
            start = c.take(n)
            name = str(buf[start:start + n], "utf-8")
        for _ in range(c.uvarint() - 1):
            index, code, hw, lso, log_start = _PART_FIXED.unpack_from(
                buf, c.take(_PART_FIXED.size))
            aborted = c.uvarint() - 1
            for _ in range(max(aborted, 0)):
                c.take(16)
                c.skip_tagged_fields()
            c.take(4)  # preferred_read_replica
            n = c.uvarint() - 1
            records = None
            if n >= 0:
                start = c.take(n)
                records = buf[start:start + n]
            c.skip_tagged_fields()
            out.append(FetchedPartition(name, topic_id, index, code, hw, lso, log_start,
                                        records))
        c.skip_tagged_fields()
    c.skip_tagged_fields()
    return FetchResponseView(throttle_ms, error_code, session_id, out)
