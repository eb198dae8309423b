"""GroupRegistry: every group this broker coordinates, shared by both group protocols.

A group lives in partition `partition_for(group_id)` of `__consumer_offsets`; the registry
knows which of those partitions this broker leads, whether each is still loading, and the
groups of each. A group id names one group at a time, classic (ClassicGroup) or consumer
protocol (ConsumerGroup): `register` replaces the other kind when an empty group changes
protocol. GroupCoordinator (offsets, admin, loading, timers), its classic-protocol mixin
and ConsumerCoordinator (KIP-848) all find groups here and nowhere else.

Owned by the event loop: changed only by coordinator methods running on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from strom.coordinator.consumer_group import ConsumerGroup
from strom.coordinator.group import ClassicGroup
from strom.protocol.errors import ErrorCode, KafkaError

Group = ClassicGroup | ConsumerGroup


@dataclass(slots=True)
class PartitionState:
    """A led partition of __consumer_offsets: loading until its records are replayed;
    `coordinator_epoch` is the leader epoch it was loaded at."""

    loading: bool = True
    groups: set[str] = field(default_factory=set)
    coordinator_epoch: int = -1


class GroupRegistry:
    """Groups by id and the __consumer_offsets partitions they belong to (see module doc).

    `partition_for` maps a group id to its partition; `offsets_topic_exists` says whether
    __consumer_offsets exists yet (COORDINATOR_NOT_AVAILABLE until it does).
    """

    def __init__(self, partition_for: Callable[[str], int],
                 offsets_topic_exists: Callable[[], bool]) -> None:
        self.partition_for = partition_for
        self._offsets_topic_exists = offsets_topic_exists
        self._groups: dict[str, Group] = {}
        self.partitions: dict[int, PartitionState] = {}

    # --- groups -----------------------------------------------------------------------
    def get(self, group_id: str) -> Group | None:
        return self._groups.get(group_id)

    def __iter__(self) -> Iterator[Group]:
        """The groups, as a snapshot (safe to change the registry while iterating)."""
        return iter(list(self._groups.values()))

    def __len__(self) -> int:
        return len(self._groups)

    def check_coordinator(self, group_id: str) -> None:
        """Raise the error a request for `group_id` gets unless this broker coordinates it:
        INVALID_GROUP_ID (empty id), COORDINATOR_NOT_AVAILABLE (no __consumer_offsets),
        NOT_COORDINATOR (another broker leads its partition) or
        COORDINATOR_LOAD_IN_PROGRESS (its partition is still loading)."""
        if not group_id:
            raise KafkaError("The group id must not be empty.", ErrorCode.invalid_group_id)
        if not self._offsets_topic_exists():
            raise KafkaError(None, ErrorCode.coordinator_not_available)
        state = self.partitions.get(self.partition_for(group_id))
        if state is None:
            raise KafkaError(f"This broker is not the coordinator of group {group_id}.",
                             ErrorCode.not_coordinator)
        if state.loading:
            raise KafkaError(None, ErrorCode.coordinator_load_in_progress)

    def register(self, group: Group) -> None:
        """Add `group`, or replace the group of the same id (a change of protocol). Its
        partition must be led (check_coordinator first)."""
        self._groups[group.group_id] = group
        self.partitions[self.partition_for(group.group_id)].groups.add(group.group_id)

    def remove(self, group_id: str) -> Group | None:
        """Forget a deleted group."""
        state = self.partitions.get(self.partition_for(group_id))
        if state is not None:
            state.groups.discard(group_id)
        return self._groups.pop(group_id, None)

    # --- partitions -------------------------------------------------------------------
    def add_partition(self, p: int, coordinator_epoch: int = -1) -> PartitionState:
        """Start leading partition `p` (at leader epoch `coordinator_epoch`): its groups
        load (COORDINATOR_LOAD_IN_PROGRESS)."""
        state = self.partitions[p] = PartitionState(coordinator_epoch=coordinator_epoch)
        return state

    def loaded(self, p: int, state: PartitionState, groups: list[Group]) -> bool:
        """Partition `p` finished loading `groups`; False (and nothing changes) when it was
        unloaded, or unloaded and added again, meanwhile."""
        if self.partitions.get(p) is not state:
            return False
        for group in groups:
            self._groups[group.group_id] = group
            state.groups.add(group.group_id)
        state.loading = False
        return True

    def remove_partition(self, p: int) -> list[Group]:
        """Stop leading partition `p`: its groups are forgotten and returned."""
        state = self.partitions.pop(p)
        return [g for g in (self._groups.pop(gid, None) for gid in state.groups)
                if g is not None]
