"""Records of the internal topic `__transaction_state`, in Kafka's TransactionLog format.

Key (a null value is a tombstone: the transactional id expired):
    TransactionLogKey v0    int16 version (0), string transactional_id
Value:
    TransactionLogValue v0  int16 version (0), int64 producer_id, int16 producer_epoch,
                            int32 transaction_timeout_ms, int8 transaction_status,
                            array (int32 count, -1 for null) of
                                string topic, array (int32 count) of int32 partition,
                            int64 transaction_last_update_timestamp_ms,
                            int64 transaction_start_timestamp_ms
    TransactionLogValue v1  the same fields in flexible encoding (compact strings and
                            arrays: unsigned varint length + 1, tagged fields after each
                            struct; tags 0 previous_producer_id, 1 next_producer_id,
                            2 client_transaction_version). Written for Transactions
                            V2 transactions (their retries and pending producer-id
                            rotation must survive a coordinator move), v0 otherwise.
Strings are int16 length + UTF-8. Status bytes are TxnState's values
(transaction_metadata.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from strom.coordinator.offsets_format import FormatError, _Reader, _s
from strom.protocol.varint import uvarint

KEY_VERSION = 0
VALUE_VERSION = 0

__all__ = ["FormatError", "TxnLogValue", "read_key", "read_value", "txn_key", "txn_value"]


@dataclass(frozen=True, slots=True)
class TxnLogValue:
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    status: int
    partitions: tuple[tuple[str, int], ...]  # sorted (topic, partition)
    last_update_ms: int
    start_ms: int
    previous_producer_id: int = -1  # v1 tagged fields
    next_producer_id: int = -1
    txn_version: int = 0


def txn_key(transactional_id: str) -> bytes:
    return struct.pack(">h", KEY_VERSION) + _s(transactional_id)


def txn_value(v: TxnLogValue) -> bytes:
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(v.partitions):
        by_topic.setdefault(topic, []).append(partition)
    if v.txn_version >= 2:
        return _txn_value_v1(v, by_topic)
    out = bytearray(struct.pack(">hqhib", VALUE_VERSION, v.producer_id, v.producer_epoch,
                                v.timeout_ms, v.status))
    out += struct.pack(">i", len(by_topic))
    for topic, parts in by_topic.items():
        out += _s(topic) + struct.pack(f">i{len(parts)}i", len(parts), *parts)
    out += struct.pack(">qq", v.last_update_ms, v.start_ms)
    return bytes(out)


def _compact_string(text: str) -> bytes:
    raw = text.encode()
    return uvarint(len(raw) + 1) + raw


def _txn_value_v1(v: TxnLogValue, by_topic: dict[str, list[int]]) -> bytes:
    out = bytearray(struct.pack(">hqhib", 1, v.producer_id, v.producer_epoch, v.timeout_ms,
                                v.status))
    out += uvarint(len(by_topic) + 1)
    for topic, parts in by_topic.items():
        out += _compact_string(topic) + uvarint(len(parts) + 1)
        out += struct.pack(f">{len(parts)}i", *parts) + uvarint(0)
    out += struct.pack(">qq", v.last_update_ms, v.start_ms)
    tags = [(tag, data) for tag, data, default in (
        (0, struct.pack(">q", v.previous_producer_id), v.previous_producer_id == -1),
        (1, struct.pack(">q", v.next_producer_id), v.next_producer_id == -1),
        (2, struct.pack(">h", v.txn_version), v.txn_version == 0)) if not default]
    out += uvarint(len(tags))
    for tag, data in tags:
        out += uvarint(tag) + uvarint(len(data)) + data
    return bytes(out)


def read_key(data: bytes) -> str:
    r = _Reader(data)
    version = r.i16()
    if version != 0:
        raise FormatError(f"unknown transaction log key version {version}")
    txn_id = r.string()
    if txn_id is None:
        raise FormatError("null transactional id")
    return txn_id


class _CompactReader(_Reader):
    """Flexible (v1) encoding: unsigned varints, compact strings and arrays."""

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            b = self._take(">B")
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 35:
                raise FormatError("varint too long")

    def compact_string(self) -> str:
        n = self.uvarint() - 1
        raw = self.data[self.pos:self.pos + max(n, 0)]
        if n < 0 or len(raw) != n:
            raise FormatError("bad compact string")
        self.pos += n
        return raw.decode()

    def top_level_tags(self) -> dict[int, bytes]:
        tags = {}
        for _ in range(self.uvarint()):
            tag, size = self.uvarint(), self.uvarint()
            tags[tag] = bytes(self.data[self.pos:self.pos + size])
            self.pos += size
            if self.pos > len(self.data):
                raise FormatError("tagged field runs past the end")
        return tags

    def skip_tags(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            size = self.uvarint()
            self.pos += size
            if self.pos > len(self.data):
                raise FormatError("tagged field runs past the end")


def read_value(data: bytes) -> TxnLogValue:
    r: _Reader
    version = _Reader(data).i16()
    if version == 0:
        r = _Reader(data)
        r.i16()
        pid, epoch, timeout, status = r.i64(), r.i16(), r.i32(), r._take(">b")
        partitions = []
        for _ in range(max(r.i32(), 0)):
            topic = r.string() or ""
            partitions += [(topic, r.i32()) for _ in range(max(r.i32(), 0))]
        return TxnLogValue(pid, epoch, timeout, status, tuple(sorted(partitions)),
                           r.i64(), r.i64())
    if version == 1:
        c = _CompactReader(data)
        c.i16()
        pid, epoch, timeout, status = c.i64(), c.i16(), c.i32(), c._take(">b")
        partitions = []
        for _ in range(max(c.uvarint() - 1, 0)):
            topic = c.compact_string()
            partitions += [(topic, c.i32()) for _ in range(max(c.uvarint() - 1, 0))]
            c.skip_tags()
        update_ms, start_ms = c.i64(), c.i64()
        tags = c.top_level_tags()
        try:
            prev = struct.unpack(">q", tags[0])[0] if 0 in tags else -1
            nxt = struct.unpack(">q", tags[1])[0] if 1 in tags else -1
            version = struct.unpack(">h", tags[2])[0] if 2 in tags else 0
        except struct.error:
            raise FormatError("bad tagged field") from None
        return TxnLogValue(pid, epoch, timeout, status, tuple(sorted(partitions)),
                           update_ms, start_ms, prev, nxt, version)
    raise FormatError(f"unknown transaction log value version {version}")
