"""strom.cluster.topic_names (Kafka's topic name rules) and the controller's replica
placement (strom.cluster.controller.assign_replicas)."""

from __future__ import annotations

from collections import Counter

import pytest

from strom.cluster import topic_names
from strom.cluster.controller import assign_replicas
from strom.protocol.errors import ErrorCode, InvalidReplicationFactor, InvalidTopic


@pytest.mark.parametrize("name", [
    "a", "my-topic", "my_topic", "my.topic", "A-Z.a_z-0.9", "...", ".a", "a" * 249,
    "__consumer_offsets",
])
def test_legal_names(name):
    topic_names.validate(name)


@pytest.mark.parametrize("name", [
    "", None, ".", "..", "a" * 250, "a b", "a/b", "a\\b", "a:b", "a*", "tópico", "a\n",
    "topic\x00", "a+b", "a,b",
])
def test_illegal_names(name):
    with pytest.raises(InvalidTopic) as e:
        topic_names.validate(name)
    assert e.value.code == ErrorCode.invalid_topic_exception


def test_length_limit_message():
    with pytest.raises(InvalidTopic, match="249"):
        topic_names.validate("x" * 250)


def test_dot_and_underscore_collide():
    with pytest.raises(InvalidTopic, match="collides"):
        topic_names.check_collision("a.b", {"a_b", "other"})
    with pytest.raises(InvalidTopic):
        topic_names.check_collision("a_b", {"a.b"})
    with pytest.raises(InvalidTopic):
        topic_names.check_collision("x.y_z", {"x_y.z"})
    topic_names.check_collision("a.b", {"a.b"})  # the same name is not a collision
    topic_names.check_collision("a.b", {"a-b", "ab", "a.c"})
    assert topic_names.unify_collision_chars("a.b_c") == "a_b_c"


def test_collision_warning():
    assert topic_names.collision_warning("a.b_c") is not None
    assert "period" in topic_names.collision_warning("a.b_c")
    assert topic_names.collision_warning("a.b") is None
    assert topic_names.collision_warning("a_b") is None
    assert topic_names.collision_warning("ab") is None


def test_internal_names():
    assert topic_names.is_internal("__consumer_offsets")
    assert topic_names.is_internal("__transaction_state")
    assert not topic_names.is_internal("__other")
    assert not topic_names.is_internal("consumer_offsets")


# --- assign_replicas ----------------------------------------------------------------------


def test_assign_replicas_golden():
    # Kafka's AdminUtils.assignReplicasToBrokersRackUnaware with fixed start index and shift:
    # leaders round-robin from the start index; the followers' shift grows by one each time
    # the partition ids wrap around the brokers.
    got = assign_replicas([3, 1, 2], 6, 3, start_index=0, shift=0)
    assert got == {
        0: (1, 2, 3),
        1: (2, 3, 1),
        2: (3, 1, 2),
        3: (1, 3, 2),
        4: (2, 1, 3),
        5: (3, 2, 1),
    }


def test_assign_replicas_properties():
    brokers = [1, 2, 3]
    got = assign_replicas(brokers, 6, 3, start_index=1, shift=2)
    assert sorted(got) == list(range(6))
    leaders = [got[p][0] for p in range(6)]
    assert leaders == [2, 3, 1, 2, 3, 1]  # round-robin from the start index
    assert Counter(leaders) == {1: 2, 2: 2, 3: 2}
    for replicas in got.values():
        assert len(replicas) == 3 and len(set(replicas)) == 3
        assert set(replicas) <= set(brokers)


def test_assign_replicas_rf_two_of_five():
    got = assign_replicas([10, 20, 30, 40, 50], 10, 2, start_index=0, shift=0)
    for replicas in got.values():
        assert len(set(replicas)) == 2
    assert Counter(r[0] for r in got.values()) == {b: 2 for b in (10, 20, 30, 40, 50)}
    # the followers of a leader differ between the two rounds
    assert got[0][1] != got[5][1]


def test_assign_replicas_start_partition():
    # new partitions (CreatePartitions) continue the same placement
    full = assign_replicas([1, 2, 3], 6, 2, start_index=0, shift=1)
    tail = assign_replicas([1, 2, 3], 3, 2, start_partition=3, start_index=0, shift=1)
    assert tail == {p: full[p] for p in (3, 4, 5)}


def test_assign_replicas_single_broker():
    assert assign_replicas([7], 3, 1) == {0: (7,), 1: (7,), 2: (7,)}


def test_assign_replicas_random_start_is_still_valid():
    for _ in range(20):
        got = assign_replicas([1, 2, 3, 4], 8, 3)
        assert all(len(set(r)) == 3 for r in got.values())
        assert Counter(r[0] for r in got.values()) == {1: 2, 2: 2, 3: 2, 4: 2}


def test_replication_factor_larger_than_brokers():
    with pytest.raises(InvalidReplicationFactor) as e:
        assign_replicas([1, 2, 3], 1, 4)
    assert e.value.code == ErrorCode.invalid_replication_factor
    assert "larger than available brokers: 3" in str(e.value)
    with pytest.raises(InvalidReplicationFactor):
        assign_replicas([], 1, 1)


def test_replication_factor_must_be_positive():
    with pytest.raises(InvalidReplicationFactor):
        assign_replicas([1, 2, 3], 1, 0)
