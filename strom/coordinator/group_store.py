"""Reading groups back from `__consumer_offsets` (see offsets_format.py), and the record
that stores a group's state.

A partition is replayed from its log start: the last record for each key wins, and a null
value (a tombstone) deletes the offset or the group. Offsets in a transactional batch
(TxnOffsetCommit) wait for the producer's control batch: COMMIT applies them, ABORT drops
them, none yet leaves them pending (txn_offsets.py). A restored group with members is
Stable; its members must heartbeat within their session timeout or be removed.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from dataclasses import dataclass, field

from strom.coordinator import offsets_format as fmt
from strom.coordinator.group import ClassicGroup, CommittedOffset, GroupState, Member
from strom.log.partition_log import PartitionLog
from strom.log.records import decode_batch

log = logging.getLogger(__name__)

Offsets = dict[tuple[str, int], CommittedOffset]


@dataclass(slots=True)
class Replayed:
    """What a partition's records leave: committed offsets and the last group record
    per group (None: deleted), and transactional offsets whose marker is not yet there
    (producer id -> group -> offsets)."""

    offsets: dict[str, Offsets] = field(default_factory=dict)
    groups: dict[str, fmt.GroupValue | None] = field(default_factory=dict)
    pending: dict[int, dict[str, Offsets]] = field(default_factory=dict)


async def replay(plog: PartitionLog, name: str) -> Replayed:
    """Replay a partition from its log start: the last record for each key wins, a null
    value deletes, transactional offsets count once their COMMIT marker is read."""
    out = Replayed()
    count = 0
    for seg, bp in plog.batches_from(plog.log_start_offset, plog.log_end_offset):
        batch = decode_batch(seg.read_bytes(bp.position, bp.header.size))
        pid = bp.header.producer_id
        if bp.header.is_control:
            ended = out.pending.pop(pid, {})
            if batch.records and _is_commit(batch.records[0].key):
                for group_id, offsets in ended.items():
                    out.offsets.setdefault(group_id, {}).update(offsets)
            continue
        transactional = bp.header.is_transactional
        for rec in batch.records:
            if rec.key is None:
                continue
            try:
                _apply(out, rec, out.pending.setdefault(pid, {}) if transactional else None)
            except fmt.FormatError as e:
                log.warning("Skipping unreadable record at offset %d of %s: %s", rec.offset,
                            name, e)
        count += 1
        if count % 100 == 0:
            await asyncio.sleep(0)  # let requests in while a large partition loads
    out.pending = {pid: groups for pid, groups in out.pending.items() if groups}
    return out


def _is_commit(key: bytes | None) -> bool:
    """A control record's key: int16 version, int16 type (0 ABORT, 1 COMMIT)."""
    return key is not None and len(key) >= 4 and struct.unpack_from(">h", key, 2)[0] == 1


def _apply(out: Replayed, rec, pending: dict[str, Offsets] | None) -> None:
    key = fmt.read_key(rec.key)
    if isinstance(key, fmt.OffsetKey):
        target = out.offsets if pending is None else pending
        per_group = target.setdefault(key.group, {})
        if rec.value is None:
            per_group.pop((key.topic, key.partition), None)
        else:
            v = fmt.read_offset_value(rec.value)
            per_group[(key.topic, key.partition)] = CommittedOffset(
                v.offset, v.leader_epoch, v.metadata, v.commit_timestamp)
    else:
        out.groups[key.group] = None if rec.value is None else fmt.read_group_value(rec.value)


def restore(group_id: str, value: fmt.GroupValue | None, offsets: Offsets, now: float
            ) -> ClassicGroup | None:
    """The group as its records left it; None when nothing of it remains."""
    if value is None and not offsets:
        return None
    group = ClassicGroup(group_id)
    group.offsets = offsets
    if value is not None:
        group.protocol_type = value.protocol_type or None
        group.generation_id = value.generation
        group.protocol_name = value.protocol
        group.leader_id = value.leader
        group.state_timestamp = value.state_timestamp
        for m in value.members:
            member = Member(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                            m.rebalance_timeout, m.session_timeout, value.protocol_type,
                            [(value.protocol or "", m.subscription)], m.assignment)
            member.heartbeat_deadline = now + m.session_timeout / 1000
            group.members[m.member_id] = member
            if m.group_instance_id:
                group.static_members[m.group_instance_id] = m.member_id
        if group.members:
            group.state = GroupState.STABLE
    return group


def group_record(group: ClassicGroup) -> tuple[bytes, bytes | None]:
    """The GroupMetadata record of a group's current generation and members."""
    value = fmt.GroupValue(
        group.protocol_type or "", group.generation_id, group.protocol_name, group.leader_id,
        group.state_timestamp,
        tuple(fmt.MemberValue(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                              m.rebalance_timeout_ms, m.session_timeout_ms,
                              m.metadata(group.protocol_name or ""), m.assignment)
              for m in group.members.values()))
    return fmt.group_key(group.group_id), fmt.group_value(value)
