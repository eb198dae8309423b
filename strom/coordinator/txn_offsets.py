"""Offsets committed inside transactions (TxnOffsetCommit) until their marker.

A transactional offset commit is written to the group's `__consumer_offsets` partition
as a transactional batch of the producer, but a consumer must not see it before the
transaction commits: it waits here, per partition, producer id and group, until the
COMMIT marker (it becomes the group's committed offset) or the ABORT marker (dropped)
is appended to that partition. While offsets wait, OffsetFetch with require_stable
answers UNSTABLE_OFFSET_COMMIT for them. Replay (group_store.py) rebuilds the same
state from the batches and control records of the partition.

Owned by the GroupCoordinator on the event loop.
"""

from __future__ import annotations

from strom.coordinator.group import CommittedOffset

TopicPartition = tuple[str, int]
Offsets = dict[TopicPartition, CommittedOffset]


class PendingTxnOffsets:
    def __init__(self) -> None:
        # __consumer_offsets partition -> producer id -> group id -> offsets
        self._pending: dict[int, dict[int, dict[str, Offsets]]] = {}

    def add(self, partition: int, producer_id: int, group_id: str, offsets: Offsets) -> None:
        by_group = self._pending.setdefault(partition, {}).setdefault(producer_id, {})
        by_group.setdefault(group_id, {}).update(offsets)

    def end(self, partition: int, producer_id: int) -> dict[str, Offsets]:
        """The offsets a marker of `producer_id` on `partition` ends, by group."""
        by_pid = self._pending.get(partition)
        if not by_pid:
            return {}
        ended = by_pid.pop(producer_id, {})
        if not by_pid:
            del self._pending[partition]
        return ended

    def is_pending(self, partition: int, group_id: str, tp: TopicPartition) -> bool:
        return any(tp in by_group.get(group_id, ())
                   for by_group in self._pending.get(partition, {}).values())

    def has_pending(self, partition: int, group_id: str) -> bool:
        return any(group_id in by_group for by_group in self._pending.get(partition, {}).values())

    def drop_partition(self, partition: int) -> None:
        self._pending.pop(partition, None)

    def load(self, partition: int, pending: dict[int, dict[str, Offsets]]) -> None:
        """The state a replay of the partition left (replaces what was there)."""
        self._pending[partition] = pending
        if not pending:
            del self._pending[partition]
