"""A consumer group of the new protocol (KIP-848): epochs, target assignment, reconciliation.

    group epoch       bumped whenever membership, a subscription or a subscribed topic's
                      partition count changes
    assignment epoch  the group epoch the target assignment was computed for
    member epoch      the assignment epoch a member has caught up with

Every ConsumerGroupHeartbeat moves its member one step toward its target:
  1. partitions it owns but should not are revoked first: the response leaves them out
     and the member stays at its epoch (UNREVOKED_PARTITIONS) until a heartbeat shows it
     no longer owns them;
  2. then it takes the new epoch, with the target partitions nobody else still owns;
     partitions another member has yet to revoke follow later (UNRELEASED_PARTITIONS).
So no partition is ever owned by two members at once.

Group states (as ConsumerGroupDescribe shows them): Empty, Assigning (target not yet
computed for the group epoch), Reconciling (members catching up), Stable.
Owned by the GroupCoordinator (event loop).

Regex subscriptions use RE2 syntax, as Kafka (RE2/J) does: patterns are compiled and matched
with google-re2, whose time is linear in the topic name, so no pattern can stall the loop.
A topic matches when the whole name matches (Java's `Matcher.matches()`).
"""

from __future__ import annotations

import enum
import functools
import uuid
from dataclasses import dataclass, field

import re2

from strom.coordinator.assignors import ASSIGNORS, DEFAULT_ASSIGNOR, Assignment
from strom.coordinator.group import CommittedOffset
from strom.protocol.errors import InvalidRegularExpression

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # an invalid pattern is the client's error, answered, not logged


@functools.lru_cache(maxsize=256)
def compile_topic_regex(pattern: str) -> re2._Regexp:
    """The compiled RE2 pattern; INVALID_REGULAR_EXPRESSION when it does not compile."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as e:
        reason = e.args[0] if e.args else e
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise InvalidRegularExpression(
            f"SubscribedTopicRegex `{pattern}` is not a valid regular expression: "
            f"{reason}.") from None


class MemberState(enum.Enum):
    STABLE = "stable"
    UNREVOKED_PARTITIONS = "unrevoked_partitions"
    UNRELEASED_PARTITIONS = "unreleased_partitions"


@dataclass(slots=True)
class ConsumerMember:
    member_id: str
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    subscribed_topic_names: tuple[str, ...] = ()
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    member_epoch: int = 0
    previous_member_epoch: int = -1
    state: MemberState = MemberState.STABLE
    assigned: Assignment = field(default_factory=dict)
    pending_revocation: Assignment = field(default_factory=dict)
    session_deadline: float = 0.0
    revocation_deadline: float | None = None

    def subscribed(self, topic_names: dict[str, uuid.UUID]) -> set[uuid.UUID]:
        names = set(self.subscribed_topic_names)
        if self.subscribed_topic_regex:
            try:
                pattern = compile_topic_regex(self.subscribed_topic_regex)
            except InvalidRegularExpression:  # refused at the heartbeat that set it
                pattern = None
            if pattern is not None:
                names |= {n for n in topic_names if pattern.fullmatch(n)}
        return {topic_names[n] for n in names if n in topic_names}


def _copy(a: Assignment) -> Assignment:
    return {t: set(ps) for t, ps in a.items() if ps}


def _minus(a: Assignment, b: Assignment) -> Assignment:
    return {t: ps - b.get(t, set()) for t, ps in a.items() if ps - b.get(t, set())}


def _intersect(a: Assignment, b: Assignment) -> Assignment:
    return {t: ps & b.get(t, set()) for t, ps in a.items() if ps & b.get(t, set())}


def _union(a: Assignment, b: Assignment) -> Assignment:
    out = _copy(a)
    for t, ps in b.items():
        out.setdefault(t, set()).update(ps)
    return out


@dataclass(slots=True)
class ConsumerGroup:
    group_id: str
    group_epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ConsumerMember] = field(default_factory=dict)
    target: dict[str, Assignment] = field(default_factory=dict)
    partition_counts: dict[uuid.UUID, int] = field(default_factory=dict)
    assignor_name: str = DEFAULT_ASSIGNOR
    offsets: dict[tuple[str, int], CommittedOffset] = field(default_factory=dict)
    state_timestamp: int = -1

    protocol_type = "consumer"

    @property
    def state(self) -> str:
        if not self.members:
            return "Empty"
        if self.assignment_epoch < self.group_epoch:
            return "Assigning"
        if any(m.member_epoch != self.assignment_epoch or m.state != MemberState.STABLE
               for m in self.members.values()):
            return "Reconciling"
        return "Stable"

    def bump(self) -> None:
        self.group_epoch += 1

    def refresh_subscriptions(self, topic_names: dict[str, uuid.UUID],
                              partitions: dict[uuid.UUID, int]) -> None:
        """Bump the group epoch when a subscribed topic's partition count changed."""
        subscribed: set[uuid.UUID] = set()
        for m in self.members.values():
            subscribed |= m.subscribed(topic_names)
        counts = {t: partitions[t] for t in subscribed if t in partitions}
        if counts != self.partition_counts:
            self.partition_counts = counts
            self.bump()

    def compute_target(self, topic_names: dict[str, uuid.UUID]) -> None:
        if self.assignment_epoch >= self.group_epoch:
            return
        preferred = [m.server_assignor for m in self.members.values() if m.server_assignor]
        self.assignor_name = preferred[0] if preferred else DEFAULT_ASSIGNOR
        assign = ASSIGNORS[self.assignor_name]
        subscriptions = {mid: m.subscribed(topic_names) for mid, m in self.members.items()}
        self.target = assign(subscriptions, self.partition_counts, self.target)
        self.assignment_epoch = self.group_epoch

    def owned_elsewhere(self, member_id: str) -> Assignment:
        out: Assignment = {}
        for mid, m in self.members.items():
            if mid != member_id:
                out = _union(out, _union(m.assigned, m.pending_revocation))
        return out

    def reconcile(self, member: ConsumerMember, owned: Assignment | None,
                  now: float) -> None:
        """Move `member` one step toward its target (see the module docstring).

        `owned` is what the member says it owns (None when the request did not say).
        """
        target = self.target.get(member.member_id, {})
        if member.state == MemberState.UNREVOKED_PARTITIONS:
            if owned is None or _intersect(owned, member.pending_revocation):
                return  # still waiting for the member to let go
            member.pending_revocation = {}
            member.revocation_deadline = None
        if member.member_epoch == self.assignment_epoch and \
                member.state == MemberState.STABLE:
            return
        revoke = _minus(member.assigned, target)
        if revoke:
            member.assigned = _intersect(member.assigned, target)
            member.pending_revocation = revoke
            member.state = MemberState.UNREVOKED_PARTITIONS
            member.revocation_deadline = now + member.rebalance_timeout_ms / 1000
            return
        wanted = _minus(target, member.assigned)
        blocked = _intersect(wanted, self.owned_elsewhere(member.member_id))
        member.assigned = _union(member.assigned, _minus(wanted, blocked))
        if member.member_epoch != self.assignment_epoch:
            member.previous_member_epoch = member.member_epoch
            member.member_epoch = self.assignment_epoch
        member.state = MemberState.UNRELEASED_PARTITIONS if blocked else MemberState.STABLE

    def remove(self, member_id: str) -> ConsumerMember | None:
        member = self.members.pop(member_id, None)
        if member is not None:
            self.target.pop(member_id, None)
            self.bump()
        return member
