"""Records of the internal topic `__consumer_offsets`, in Kafka's format.

Keys (the key's version says which kind of record it is):
    OffsetCommitKey   v1   int16 version, string group, string topic, int32 partition
    GroupMetadataKey  v2   int16 version, string group
Values (a null value is a tombstone: the offset or group was deleted):
    OffsetCommitValue v3   int16 version, int64 offset, int32 leader_epoch,
                           string metadata, int64 commit_timestamp
    GroupMetadataValue v3  int16 version, string protocol_type, int32 generation,
                           nullable string protocol, nullable string leader,
                           int64 current_state_timestamp,
                           array of members: string member_id, nullable string
                           group_instance_id, string client_id, string client_host,
                           int32 rebalance_timeout, int32 session_timeout,
                           bytes subscription, bytes assignment
Strings are int16 length + UTF-8 (-1 for null), bytes int32 length, arrays int32 count.
Values of older versions (offset v0-v1: with expire timestamp, no leader epoch; group v0-v2)
are read too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OFFSET_COMMIT_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2
OFFSET_COMMIT_VALUE_VERSION = 3
GROUP_METADATA_VALUE_VERSION = 3


class FormatError(ValueError):
    pass


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, fmt: str):
        try:
            (v,) = struct.unpack_from(fmt, self.data, self.pos)
        except struct.error as e:
            raise FormatError(str(e)) from None
        self.pos += struct.calcsize(fmt)
        return v

    def i16(self) -> int:
        return self._take(">h")

    def i32(self) -> int:
        return self._take(">i")

    def i64(self) -> int:
        return self._take(">q")

    def string(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        raw = self.data[self.pos:self.pos + n]
        if len(raw) != n:
            raise FormatError("string runs past the end")
        self.pos += n
        return raw.decode()

    def bytes_(self) -> bytes:
        n = max(self.i32(), 0)
        raw = self.data[self.pos:self.pos + n]
        if len(raw) != n:
            raise FormatError("bytes run past the end")
        self.pos += n
        return raw


def _s(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _b(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value


@dataclass(frozen=True, slots=True)
class OffsetKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupKey:
    group: str


@dataclass(frozen=True, slots=True)
class OffsetValue:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp: int


@dataclass(frozen=True, slots=True)
class MemberValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout: int
    session_timeout: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    state_timestamp: int
    members: tuple[MemberValue, ...]


def offset_key(group: str, topic: str, partition: int) -> bytes:
    return struct.pack(">h", OFFSET_COMMIT_KEY_VERSION) + _s(group) + _s(topic) + \
        struct.pack(">i", partition)


def group_key(group: str) -> bytes:
    return struct.pack(">h", GROUP_METADATA_KEY_VERSION) + _s(group)


def offset_value(v: OffsetValue) -> bytes:
    return struct.pack(">hqi", OFFSET_COMMIT_VALUE_VERSION, v.offset, v.leader_epoch) + \
        _s(v.metadata) + struct.pack(">q", v.commit_timestamp)


def group_value(v: GroupValue) -> bytes:
    out = bytearray(struct.pack(">h", GROUP_METADATA_VALUE_VERSION))
    out += _s(v.protocol_type) + struct.pack(">i", v.generation) + _s(v.protocol) + \
        _s(v.leader) + struct.pack(">q", v.state_timestamp) + struct.pack(">i", len(v.members))
    for m in v.members:
        out += _s(m.member_id) + _s(m.group_instance_id) + _s(m.client_id) + \
            _s(m.client_host) + struct.pack(">ii", m.rebalance_timeout, m.session_timeout) + \
            _b(m.subscription) + _b(m.assignment)
    return bytes(out)


def read_key(data: bytes) -> OffsetKey | GroupKey:
    r = _Reader(data)
    version = r.i16()
    if version in (0, 1):
        return OffsetKey(r.string() or "", r.string() or "", r.i32())
    if version == 2:
        return GroupKey(r.string() or "")
    raise FormatError(f"unknown key version {version}")


def read_offset_value(data: bytes) -> OffsetValue:
    r = _Reader(data)
    version = r.i16()
    offset = r.i64()
    epoch = r.i32() if version >= 3 else -1
    metadata = r.string() or ""
    timestamp = r.i64()
    return OffsetValue(offset, epoch, metadata, timestamp)


def read_group_value(data: bytes) -> GroupValue:
    r = _Reader(data)
    version = r.i16()
    protocol_type = r.string() or ""
    generation = r.i32()
    protocol = r.string()
    leader = r.string()
    state_timestamp = r.i64() if version >= 2 else -1
    members = []
    for _ in range(max(r.i32(), 0)):
        member_id = r.string() or ""
        instance = r.string() if version >= 3 else None
        client_id = r.string() or ""
        host = r.string() or ""
        rebalance = r.i32() if version >= 1 else 0
        session = r.i32()
        members.append(MemberValue(member_id, instance, client_id, host, rebalance, session,
                                   r.bytes_(), r.bytes_()))
    return GroupValue(protocol_type, generation, protocol, leader, state_timestamp,
                      tuple(members))
