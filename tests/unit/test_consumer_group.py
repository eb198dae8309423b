"""Reconciliation in a consumer group of the new protocol (strom.coordinator.consumer_group).

A `Sim` plays the coordinator's part of a ConsumerGroupHeartbeat (join, subscription,
target assignment, reconcile) and each client's part (it owns what the last response gave it,
and may hold on to revoked partitions for a while before it reports that it let them go).

What must hold at every step:
- no partition is owned by two members, neither as the broker sees it (assigned + pending
  revocation) nor as the clients do;
- a client never owns something the broker does not count as its;
- group, assignment and member epochs never go down.
And when every member keeps heart-beating with its owned partitions, the group reaches Stable
with every member owning exactly its target.
"""

from __future__ import annotations

import uuid

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from strom.coordinator.consumer_group import ConsumerGroup, ConsumerMember, MemberState

T1 = uuid.UUID(int=1)
T2 = uuid.UUID(int=2)
NAMES = {"t1": T1, "t2": T2}


def flat(assignment) -> set[tuple[uuid.UUID, int]]:
    return {(t, p) for t, ps in assignment.items() for p in ps}


def parts(assignment, topic=T1) -> set[int]:
    return set(assignment.get(topic, ()))


class Sim:
    """The broker's ConsumerGroup plus a model of each client's actual ownership."""

    def __init__(self, partitions: dict[uuid.UUID, int] | None = None,
                 assignor: str = "uniform") -> None:
        self.group = ConsumerGroup("g")
        self.partitions = dict(partitions or {T1: 6})
        self.assignor = assignor
        self.owned: dict[str, dict[uuid.UUID, set[int]]] = {}  # what each client owns
        self.now = 0.0

    def _step(self, member: ConsumerMember, owned) -> dict:
        self.group.refresh_subscriptions(NAMES, self.partitions)
        self.group.compute_target(NAMES)
        self.group.reconcile(member, owned, self.now)
        return {t: set(ps) for t, ps in member.assigned.items()}

    def join(self, member_id: str, topics=("t1",)) -> dict:
        member = ConsumerMember(member_id, None, None, "client", "/127.0.0.1", 60_000,
                                subscribed_topic_names=tuple(sorted(topics)),
                                server_assignor=self.assignor)
        self.group.members[member_id] = member
        self.group.bump()
        response = self._step(member, {})
        self.owned[member_id] = {}
        self.apply(member_id, response)
        return response

    def heartbeat(self, member_id: str, report: bool = True, revoke: bool = True) -> dict:
        """One heartbeat: the client reports what it owns (or None), then applies the
        response: it takes new partitions at once, and lets revoked ones go at once, or only
        later (revoke=False) when it is slow to revoke."""
        member = self.group.members[member_id]
        owned = {t: set(ps) for t, ps in self.owned[member_id].items() if ps} if report \
            else None
        response = self._step(member, owned)
        self.apply(member_id, response, revoke)
        return response

    def apply(self, member_id: str, response: dict, revoke: bool = True) -> None:
        mine = self.owned[member_id]
        if revoke:
            mine = {}
        for t, ps in response.items():
            mine.setdefault(t, set()).update(ps)
        self.owned[member_id] = {t: ps for t, ps in mine.items() if ps}

    def finish_revocation(self, member_id: str) -> None:
        """A slow client finally lets go of what its last response left out."""
        assigned = self.group.members[member_id].assigned
        self.owned[member_id] = {t: ps & assigned.get(t, set())
                                 for t, ps in self.owned[member_id].items()
                                 if ps & assigned.get(t, set())}

    def rejoin(self, member_id: str) -> dict:
        """The member joins again with epoch 0 (after being fenced, say): it has abandoned
        its partitions, and the coordinator resets it as consumer_coordinator does."""
        m = self.group.members[member_id]
        m.member_epoch = 0
        m.assigned, m.pending_revocation = {}, {}
        m.state = MemberState.STABLE
        self.group.bump()
        self.owned[member_id] = {}
        response = self._step(m, {})
        self.apply(member_id, response)
        return response

    def leave(self, member_id: str) -> None:
        self.group.remove(member_id)
        del self.owned[member_id]

    def settle(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            for mid in list(self.group.members):
                self.finish_revocation(mid)
                self.heartbeat(mid)
            if self.group.state == "Stable":
                return
        raise AssertionError(f"not stable after {rounds} rounds: {self.group.state}")

    def check(self) -> None:
        broker_seen: dict[tuple[uuid.UUID, int], str] = {}
        for mid, m in self.group.members.items():
            assert not (flat(m.assigned) & flat(m.pending_revocation))
            for tp in flat(m.assigned) | flat(m.pending_revocation):
                assert tp not in broker_seen, f"{tp} owned by {broker_seen[tp]} and {mid}"
                broker_seen[tp] = mid
        client_seen: dict[tuple[uuid.UUID, int], str] = {}
        for mid, owned in self.owned.items():
            m = self.group.members[mid]
            assert flat(owned) <= flat(m.assigned) | flat(m.pending_revocation), \
                f"client {mid} owns {owned} beyond what the broker counts as its"
            for tp in flat(owned):
                assert tp not in client_seen, f"{tp} owned by clients {client_seen[tp]}, {mid}"
                client_seen[tp] = mid


def test_first_member_gets_everything():
    sim = Sim()
    response = sim.join("a")
    assert parts(response) == set(range(6))
    a = sim.group.members["a"]
    assert a.state == MemberState.STABLE
    assert a.member_epoch == sim.group.group_epoch == sim.group.assignment_epoch
    assert sim.group.state == "Stable"


def test_second_member_join_revoke_then_release():
    sim = Sim()
    sim.join("a")
    a = sim.group.members["a"]
    epoch_before = a.member_epoch

    # b joins: its target partitions are all still a's, so it gets nothing yet
    response_b = sim.join("b")
    b = sim.group.members["b"]
    target_a = parts(sim.group.target["a"])
    target_b = parts(sim.group.target["b"])
    assert len(target_a) == len(target_b) == 3 and not target_a & target_b
    assert response_b == {}
    assert b.state == MemberState.UNRELEASED_PARTITIONS
    assert b.member_epoch == sim.group.assignment_epoch > epoch_before
    assert sim.group.state == "Reconciling"
    sim.check()

    # a's next heartbeat: revoke first; it is told to keep only its target, at its old epoch
    response_a = sim.heartbeat("a", revoke=False)
    assert parts(response_a) == target_a
    assert a.state == MemberState.UNREVOKED_PARTITIONS
    assert parts(a.pending_revocation) == target_b
    assert a.member_epoch == epoch_before
    sim.check()

    # b still gets nothing while a has not confirmed
    assert sim.heartbeat("b") == {}
    assert b.state == MemberState.UNRELEASED_PARTITIONS
    # a heartbeat without owned partitions, or one still showing the revoked ones, changes
    # nothing
    sim.heartbeat("a", report=False, revoke=False)
    assert a.state == MemberState.UNREVOKED_PARTITIONS and a.member_epoch == epoch_before
    sim.heartbeat("a", revoke=False)
    assert a.state == MemberState.UNREVOKED_PARTITIONS and a.member_epoch == epoch_before
    assert sim.heartbeat("b") == {}
    sim.check()

    # a lets go and says so: it takes the new epoch and is stable
    sim.finish_revocation("a")
    response_a = sim.heartbeat("a")
    assert parts(response_a) == target_a
    assert a.state == MemberState.STABLE
    assert a.member_epoch == sim.group.assignment_epoch
    assert a.pending_revocation == {}
    assert a.revocation_deadline is None
    sim.check()

    # now b gets its partitions
    assert parts(sim.heartbeat("b")) == target_b
    assert b.state == MemberState.STABLE
    assert sim.group.state == "Stable"
    sim.check()


def test_unreleased_partitions_arrive_one_releaser_at_a_time():
    sim = Sim({T1: 6})
    sim.join("a")
    sim.join("b")
    sim.settle()
    # c joins and wants one partition from a and one from b
    sim.join("c")
    c = sim.group.members["c"]
    target_c = parts(sim.group.target["c"])
    assert len(target_c) == 2
    from_a = target_c & parts(sim.group.members["a"].assigned)
    from_b = target_c & parts(sim.group.members["b"].assigned)
    assert len(from_a) == len(from_b) == 1
    sim.heartbeat("a", revoke=True)  # a revokes ...
    sim.heartbeat("a")               # ... and confirms
    assert parts(sim.heartbeat("c")) == from_a
    assert c.state == MemberState.UNRELEASED_PARTITIONS
    sim.check()
    sim.heartbeat("b")
    sim.heartbeat("b")
    assert parts(sim.heartbeat("c")) == target_c
    assert c.state == MemberState.STABLE
    sim.check()


def test_leaving_member_frees_its_partitions_at_once():
    sim = Sim({T1: 4})
    sim.join("a")
    sim.join("b")
    sim.settle()
    gone = parts(sim.group.members["b"].assigned)
    epoch = sim.group.group_epoch
    sim.leave("b")
    assert sim.group.group_epoch == epoch + 1
    assert sim.group.state == "Assigning"
    assert parts(sim.heartbeat("a")) == set(range(4))
    assert gone <= parts(sim.group.members["a"].assigned)
    assert sim.group.state == "Stable"


def test_leaving_member_with_pending_revocation_releases_them():
    sim = Sim({T1: 4})
    sim.join("a")
    sim.join("b")
    sim.heartbeat("a", revoke=False)  # a is told to revoke two, but has not confirmed
    assert sim.group.members["a"].state == MemberState.UNREVOKED_PARTITIONS
    assert sim.heartbeat("b") == {}
    sim.leave("a")
    assert parts(sim.heartbeat("b")) == set(range(4))
    sim.check()


def test_rejoin_with_epoch_zero_starts_over():
    sim = Sim({T1: 2})
    sim.join("a")
    a = sim.group.members["a"]
    assert a.member_epoch > 0
    assert parts(sim.rejoin("a")) == {0, 1}
    assert a.member_epoch == sim.group.group_epoch


def test_partition_count_growth_bumps_the_epoch_and_assigns_the_new_partitions():
    sim = Sim({T1: 2})
    sim.join("a")
    sim.join("b")
    sim.settle()
    epoch = sim.group.group_epoch
    sim.partitions[T1] = 4
    sim.heartbeat("a")
    assert sim.group.group_epoch == epoch + 1
    sim.settle()
    assert flat(sim.group.members["a"].assigned) | flat(sim.group.members["b"].assigned) \
        == {(T1, p) for p in range(4)}


def test_heterogeneous_subscriptions_reconcile():
    sim = Sim({T1: 3, T2: 3})
    sim.join("a", ("t1", "t2"))
    sim.join("b", ("t2",))
    sim.settle()
    a, b = sim.group.members["a"], sim.group.members["b"]
    assert a.assigned[T1] == {0, 1, 2}
    assert T1 not in b.assigned
    assert flat(a.assigned) | flat(b.assigned) == flat({T1: {0, 1, 2}, T2: {0, 1, 2}})
    sim.check()


def test_range_assignor_is_used_when_a_member_asks_for_it():
    sim = Sim({T1: 5}, assignor="range")
    sim.join("a")
    sim.join("b")
    sim.settle()
    assert sim.group.assignor_name == "range"
    assert parts(sim.group.members["a"].assigned) == {0, 1, 2}
    assert parts(sim.group.members["b"].assigned) == {3, 4}


def test_revocation_deadline_is_set_from_the_rebalance_timeout():
    sim = Sim({T1: 2})
    sim.join("a")
    sim.join("b")
    sim.now = 100.0
    sim.heartbeat("a", revoke=False)
    a = sim.group.members["a"]
    assert a.state == MemberState.UNREVOKED_PARTITIONS
    assert a.revocation_deadline == 100.0 + a.rebalance_timeout_ms / 1000


# -- randomized sequences ------------------------------------------------------------------


class ReconcileMachine(RuleBasedStateMachine):
    """Random joins, leaves, heartbeats (with and without owned partitions), slow and quick
    revocations and partition-count growth; the invariants are checked after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.sim: Sim | None = None
        self.next_id = 0
        self.epochs: dict[str, int] = {}
        self.group_epoch = 0
        self.assignment_epoch = 0

    @initialize(assignor=st.sampled_from(["uniform", "range"]),
                p1=st.integers(1, 8), p2=st.integers(0, 5))
    def setup(self, assignor, p1, p2):
        self.sim = Sim({T1: p1, T2: p2}, assignor=assignor)

    @precondition(lambda self: len(self.sim.group.members) < 6)
    @rule(topics=st.sampled_from([("t1",), ("t2",), ("t1", "t2")]))
    def join(self, topics):
        mid = f"m{self.next_id}"
        self.next_id += 1
        self.sim.join(mid, topics)

    @precondition(lambda self: self.sim.group.members)
    @rule(data=st.data())
    def leave(self, data):
        mid = data.draw(st.sampled_from(sorted(self.sim.group.members)))
        self.sim.leave(mid)
        self.epochs.pop(mid, None)

    @precondition(lambda self: self.sim.group.members)
    @rule(data=st.data(), report=st.booleans(), revoke=st.booleans())
    def heartbeat(self, data, report, revoke):
        mid = data.draw(st.sampled_from(sorted(self.sim.group.members)))
        self.sim.heartbeat(mid, report=report, revoke=revoke)

    @precondition(lambda self: self.sim.group.members)
    @rule(data=st.data())
    def rejoin(self, data):
        mid = data.draw(st.sampled_from(sorted(self.sim.group.members)))
        self.epochs[mid] = 0  # a rejoin starts the member's epochs over
        self.sim.rejoin(mid)

    @precondition(lambda self: self.sim.group.members)
    @rule(data=st.data())
    def finish_revocation(self, data):
        mid = data.draw(st.sampled_from(sorted(self.sim.group.members)))
        self.sim.finish_revocation(mid)

    @rule(topic=st.sampled_from([T1, T2]), more=st.integers(1, 3))
    def add_partitions(self, topic, more):
        self.sim.partitions[topic] += more

    @invariant()
    def no_partition_has_two_owners(self):
        if self.sim is not None:
            self.sim.check()

    @invariant()
    def epochs_only_increase(self):
        if self.sim is None:
            return
        g = self.sim.group
        assert g.group_epoch >= self.group_epoch
        assert g.assignment_epoch >= self.assignment_epoch
        assert g.assignment_epoch <= g.group_epoch
        self.group_epoch, self.assignment_epoch = g.group_epoch, g.assignment_epoch
        for mid, m in g.members.items():
            assert m.member_epoch >= self.epochs.get(mid, 0)
            assert m.member_epoch <= g.assignment_epoch
            self.epochs[mid] = m.member_epoch

    def teardown(self):
        if self.sim is None or not self.sim.group.members:
            return
        # everyone heart-beats normally from here on: the group must converge
        self.sim.settle()
        self.sim.check()
        g = self.sim.group
        for mid, m in g.members.items():
            assert m.assigned == {t: ps for t, ps in g.target.get(mid, {}).items() if ps}
            assert m.member_epoch == g.assignment_epoch == g.group_epoch
        subscribed = set()
        for m in g.members.values():
            subscribed |= m.subscribed(NAMES)
        everything = {(t, p) for t in subscribed for p in range(self.sim.partitions[t])}
        assert set().union(*(flat(m.assigned) for m in g.members.values())) == everything


ReconcileMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40,
                                              deadline=None)
TestReconcile = ReconcileMachine.TestCase
