"""A classic consumer group: its members, generation and state machine.

States and their allowed previous states (Kafka's ClassicGroupState):

    EMPTY                 no members; offsets may still be committed and fetched
                          <- PREPARING_REBALANCE
    PREPARING_REBALANCE   waiting for members to (re)join
                          <- EMPTY, STABLE, COMPLETING_REBALANCE
    COMPLETING_REBALANCE  joined; waiting for the leader's SyncGroup with assignments
                          <- PREPARING_REBALANCE
    STABLE                assignments handed out; heartbeats keep members alive
                          <- COMPLETING_REBALANCE
    DEAD                  deleted or moved away; nothing is served
                          <- every state

Owned by the GroupCoordinator (event loop); every transition goes through `transition`.
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from dataclasses import dataclass, field

from strom.clock import TimerHandle


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_VALID_PREVIOUS = {
    GroupState.EMPTY: {GroupState.PREPARING_REBALANCE},
    GroupState.PREPARING_REBALANCE: {GroupState.EMPTY, GroupState.STABLE,
                                     GroupState.COMPLETING_REBALANCE},
    GroupState.COMPLETING_REBALANCE: {GroupState.PREPARING_REBALANCE},
    GroupState.STABLE: {GroupState.COMPLETING_REBALANCE},
    GroupState.DEAD: set(GroupState),
}


@dataclass(slots=True)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_future: asyncio.Future | None = None
    sync_future: asyncio.Future | None = None
    heartbeat_deadline: float = 0.0
    is_new: bool = False

    @property
    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str) -> bytes:
        for name, data in self.protocols:
            if name == protocol:
                return data
        return b""

    @property
    def awaiting_join(self) -> bool:
        return self.join_future is not None and not self.join_future.done()

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_future is not None and not self.sync_future.done()


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str
    commit_timestamp: int


@dataclass(slots=True)
class ClassicGroup:
    group_id: str
    state: GroupState = GroupState.EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    pending_members: dict[str, float] = field(default_factory=dict)  # id -> deadline
    static_members: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    offsets: dict[tuple[str, int], CommittedOffset] = field(default_factory=dict)
    state_timestamp: int = -1
    join_timer: TimerHandle | None = None  # on the coordinator's Clock
    initial_join_deadline: float = 0.0
    in_initial_delay: bool = False
    new_member_added: bool = False
    empty_write: asyncio.Task | None = None  # writing the group's Empty state

    def transition(self, new: GroupState) -> None:
        if self.state not in _VALID_PREVIOUS[new]:
            raise RuntimeError(f"Group {self.group_id}: illegal transition "
                               f"{self.state.value} -> {new.value}")
        self.state = new

    def in_state(self, *states: GroupState) -> bool:
        return self.state in states

    @property
    def is_empty(self) -> bool:
        return not self.members

    def supports(self, protocol_type: str, protocols: list[str]) -> bool:
        if self.is_empty and not self.pending_members:
            return bool(protocol_type) and bool(protocols)
        if self.protocol_type is not None and protocol_type != self.protocol_type:
            return False
        candidates = self.candidate_protocols()
        return bool(candidates & set(protocols)) if candidates is not None else True

    def candidate_protocols(self) -> set[str] | None:
        """Protocols every member supports (None when there are no members)."""
        result: set[str] | None = None
        for m in self.members.values():
            names = set(m.protocol_names)
            result = names if result is None else result & names
        return result

    def select_protocol(self) -> str:
        """Each member votes for its most preferred candidate; the most votes win."""
        candidates = self.candidate_protocols() or set()
        votes: Counter[str] = Counter()
        for m in self.members.values():
            for name in m.protocol_names:
                if name in candidates:
                    votes[name] += 1
                    break
        return max(sorted(votes), key=lambda n: votes[n])

    def subscribed_topics(self) -> set[str] | None:
        """Topics the members' consumer-protocol subscriptions name (None if unknown)."""
        if self.protocol_type != "consumer" or self.protocol_name is None:
            return None
        topics: set[str] = set()
        for m in self.members.values():
            parsed = parse_subscription(m.metadata(self.protocol_name))
            if parsed is None:
                return None
            topics |= parsed
        return topics

    def all_joined(self) -> bool:
        return all(m.awaiting_join for m in self.members.values()) and not self.pending_members


def parse_subscription(data: bytes) -> set[str] | None:
    """Topics in a ConsumerProtocolSubscription (version int16, topics array of strings)."""
    import struct

    try:
        pos = 2
        (count,) = struct.unpack_from(">i", data, pos)
        pos += 4
        topics = set()
        for _ in range(max(count, 0)):
            (n,) = struct.unpack_from(">h", data, pos)
            pos += 2
            topics.add(data[pos:pos + n].decode())
            pos += n
        return topics
    except (struct.error, UnicodeDecodeError):
        return None
