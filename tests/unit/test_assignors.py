"""The server-side assignors of the consumer group protocol (strom.coordinator.assignors).

Both assignors, with homogeneous and heterogeneous subscriptions: every subscribed partition
is assigned exactly once, and only to a member that subscribes to its topic. `uniform` is
balanced within one partition when everyone subscribes to the same topics, and sticky: a
member joining or leaving moves as few partitions as a balanced result allows, and nobody else
loses what it had. `range` gives each member of a topic a contiguous range, the first members
(by member id) one extra when the partitions do not divide evenly.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strom.coordinator.assignors import (
    ASSIGNORS,
    DEFAULT_ASSIGNOR,
    range_assign,
    uniform_assign,
)

T1, T2, T3 = (uuid.UUID(int=i) for i in (1, 2, 3))
TOPICS = [T1, T2, T3]


def members(n: int) -> list[str]:
    return [f"m{i:02d}" for i in range(n)]


def owners(result) -> dict[tuple[uuid.UUID, int], list[str]]:
    out: dict[tuple[uuid.UUID, int], list[str]] = {}
    for m, assignment in result.items():
        for t, ps in assignment.items():
            for p in ps:
                out.setdefault((t, p), []).append(m)
    return out


def count(assignment) -> int:
    return sum(len(ps) for ps in assignment.values())


def check_valid(subscriptions, counts, result) -> None:
    """Every subscribed partition exactly once, only to a subscriber of its topic, nothing
    else, every member present in the result."""
    assert set(result) == set(subscriptions)
    expected = {(t, p) for t, n in counts.items()
                if any(t in s for s in subscriptions.values()) for p in range(n)}
    got = owners(result)
    assert set(got) == expected
    for (t, p), ms in got.items():
        assert len(ms) == 1, f"{t}-{p} has owners {ms}"
        assert t in subscriptions[ms[0]], f"{ms[0]} owns {t}-{p} without subscribing"
    for assignment in result.values():
        assert all(ps for ps in assignment.values()), "empty partition sets in the result"


def spread(result) -> int:
    sizes = [count(a) for a in result.values()]
    return max(sizes) - min(sizes)


def fewest_moves_to_add_one(old_counts: list[int], total: int) -> int:
    """How many partitions must move when one member joins `len(old_counts)` members that
    own `old_counts` (summing to `total`), for the result to be balanced within one."""
    n = len(old_counts) + 1
    floor, extra = divmod(total, n)
    kept = 0
    for i, c in enumerate(sorted(old_counts, reverse=True)):
        kept += min(c, floor + (1 if i < extra else 0))
    return total - kept


ASSIGN = pytest.mark.parametrize("assign", [uniform_assign, range_assign],
                                 ids=["uniform", "range"])


def test_registry():
    assert ASSIGNORS == {"uniform": uniform_assign, "range": range_assign}
    assert DEFAULT_ASSIGNOR == "uniform"


@ASSIGN
def test_six_partitions_three_members_two_each(assign):
    subs = {m: {T1} for m in members(3)}
    result = assign(subs, {T1: 6})
    check_valid(subs, {T1: 6}, result)
    assert [count(result[m]) for m in members(3)] == [2, 2, 2]


@ASSIGN
def test_more_members_than_partitions_leaves_some_idle(assign):
    subs = {m: {T1} for m in members(7)}
    result = assign(subs, {T1: 6})
    check_valid(subs, {T1: 6}, result)
    assert sorted(count(a) for a in result.values()) == [0, 1, 1, 1, 1, 1, 1]


@ASSIGN
def test_no_members_no_topics_and_unsubscribed_topics(assign):
    assert assign({}, {T1: 3}) == {}
    assert assign({"a": set()}, {T1: 3}) == {"a": {}}
    assert assign({"a": {T1}}, {}) == {"a": {}}
    # a topic in partition_counts nobody subscribes to is not handed out
    subs = {"a": {T1}, "b": {T1}}
    result = assign(subs, {T1: 2, T2: 5})
    check_valid(subs, {T1: 2, T2: 5}, result)
    assert all(T2 not in a for a in result.values())


@ASSIGN
def test_topic_with_zero_partitions(assign):
    subs = {"a": {T1, T2}}
    result = assign(subs, {T1: 0, T2: 2})
    check_valid(subs, {T1: 0, T2: 2}, result)
    assert result == {"a": {T2: {0, 1}}}


@ASSIGN
def test_heterogeneous_subscriptions(assign):
    subs = {"a": {T1}, "b": {T1, T2}, "c": {T2, T3}, "d": {T3}}
    counts = {T1: 5, T2: 3, T3: 4}
    result = assign(subs, counts)
    check_valid(subs, counts, result)


@ASSIGN
def test_a_topic_only_one_member_subscribes_to_goes_wholly_to_it(assign):
    subs = {"a": {T1, T2}, "b": {T1}, "c": {T1}}
    counts = {T1: 6, T2: 4}
    result = assign(subs, counts)
    check_valid(subs, counts, result)
    assert result["a"][T2] == {0, 1, 2, 3}


# -- range ---------------------------------------------------------------------------------


def test_range_contiguous_ranges_first_members_get_the_extra():
    subs = {m: {T1} for m in ("c", "a", "b")}  # order of the mapping does not matter
    result = range_assign(subs, {T1: 8})
    assert result == {"a": {T1: {0, 1, 2}}, "b": {T1: {3, 4, 5}}, "c": {T1: {6, 7}}}


def test_range_per_topic_over_that_topics_subscribers():
    subs = {"a": {T1, T2}, "b": {T1}, "c": {T1, T2}}
    result = range_assign(subs, {T1: 7, T2: 3})
    assert result["a"] == {T1: {0, 1, 2}, T2: {0, 1}}
    assert result["b"] == {T1: {3, 4}}
    assert result["c"] == {T1: {5, 6}, T2: {2}}


def test_range_ignores_the_current_assignment():
    subs = {m: {T1} for m in members(3)}
    current = {"m00": {T1: {5}}, "m01": {T1: {0, 1, 2}}, "m02": {T1: {3, 4}}}
    assert range_assign(subs, {T1: 6}, current) == range_assign(subs, {T1: 6})


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_range_property(data):
    n = data.draw(st.integers(1, 8), label="members")
    counts = {t: data.draw(st.integers(0, 20), label=f"partitions {t.int}") for t in TOPICS}
    subs = {m: data.draw(st.sets(st.sampled_from(TOPICS)), label=m) for m in members(n)}
    result = range_assign(subs, counts)
    check_valid(subs, counts, result)
    for t, total in counts.items():
        subscribers = sorted(m for m, s in subs.items() if t in s)
        if not subscribers:
            continue
        per, extra = divmod(total, len(subscribers))
        start = 0
        for i, m in enumerate(subscribers):
            ps = sorted(result[m].get(t, ()))
            size = per + (1 if i < extra else 0)
            assert ps == list(range(start, start + size)), (t, m, ps)
            start += size


# -- uniform -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_uniform_homogeneous_is_balanced_within_one(data):
    n = data.draw(st.integers(1, 10), label="members")
    topics = data.draw(st.sets(st.sampled_from(TOPICS), min_size=1), label="topics")
    counts = {t: data.draw(st.integers(0, 25), label=f"partitions {t.int}") for t in topics}
    subs = {m: set(topics) for m in members(n)}
    result = uniform_assign(subs, counts)
    check_valid(subs, counts, result)
    assert spread(result) <= 1


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_uniform_heterogeneous_is_valid(data):
    n = data.draw(st.integers(1, 8), label="members")
    counts = {t: data.draw(st.integers(0, 15), label=f"partitions {t.int}") for t in TOPICS}
    subs = {m: data.draw(st.sets(st.sampled_from(TOPICS)), label=m) for m in members(n)}
    current = uniform_assign(subs, counts)
    check_valid(subs, counts, current)
    # and again from that assignment, after a member changes its subscription
    changed = data.draw(st.sampled_from(members(n)), label="changes")
    subs[changed] = data.draw(st.sets(st.sampled_from(TOPICS)), label="new subscription")
    result = uniform_assign(subs, counts, current)
    check_valid(subs, counts, result)


def test_uniform_with_no_change_keeps_everything():
    subs = {m: {T1, T2} for m in members(3)}
    counts = {T1: 7, T2: 4}
    first = uniform_assign(subs, counts)
    assert uniform_assign(subs, counts, first) == first


def test_uniform_adding_a_fourth_member_to_six_partitions_moves_one():
    subs = {m: {T1} for m in members(3)}
    current = uniform_assign(subs, {T1: 6})
    subs["m03"] = {T1}
    result = uniform_assign(subs, {T1: 6}, current)
    check_valid(subs, {T1: 6}, result)
    assert spread(result) <= 1
    assert count(result["m03"]) == 1  # the fewest moves: one partition changes owner
    for m in members(3):
        assert set(result[m][T1]) <= current[m][T1]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_uniform_adding_a_member_is_sticky(data):
    n = data.draw(st.integers(1, 9), label="members before")
    topics = data.draw(st.sets(st.sampled_from(TOPICS), min_size=1), label="topics")
    counts = {t: data.draw(st.integers(0, 25), label=f"partitions {t.int}") for t in topics}
    subs = {m: set(topics) for m in members(n)}
    # the current assignment: whatever uniform gave, or a random balanced-or-not one
    if data.draw(st.booleans(), label="from uniform"):
        current = uniform_assign(subs, counts)
    else:
        current = {m: {} for m in subs}
        for t, total in counts.items():
            for p in range(total):
                m = data.draw(st.sampled_from(members(n)), label=f"owner {t.int}-{p}")
                current[m].setdefault(t, set()).add(p)
    newcomer = "zz-new"
    subs[newcomer] = set(topics)
    result = uniform_assign(subs, counts, current)
    check_valid(subs, counts, result)
    assert spread(result) <= 1
    # nobody but the newcomer gains a partition... unless the current assignment was
    # unbalanced, in which case partitions may also move between old members; either way,
    # everyone keeps what a balanced result lets them keep, and no more moves than needed.
    old_counts = [count(current[m]) for m in members(n)]
    total = sum(counts.values())
    moved = sum(len(ps - current.get(m, {}).get(t, set()))
                for m, a in result.items() for t, ps in a.items())
    assert moved == fewest_moves_to_add_one(old_counts, total)
    if spread({m: current[m] for m in members(n)}) <= 1:
        for m in members(n):
            for t, ps in result[m].items():
                assert ps <= current[m].get(t, set()), f"{m} gained {t}"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_uniform_removing_a_member_moves_only_its_partitions(data):
    n = data.draw(st.integers(2, 10), label="members before")
    topics = data.draw(st.sets(st.sampled_from(TOPICS), min_size=1), label="topics")
    counts = {t: data.draw(st.integers(0, 25), label=f"partitions {t.int}") for t in topics}
    subs = {m: set(topics) for m in members(n)}
    current = uniform_assign(subs, counts)
    gone = data.draw(st.sampled_from(members(n)), label="leaves")
    del subs[gone]
    result = uniform_assign(subs, counts, current)
    check_valid(subs, counts, result)
    assert spread(result) <= 1
    for m in subs:
        for t, ps in current[m].items():
            assert ps <= result[m].get(t, set()), f"{m} lost part of {t}"
