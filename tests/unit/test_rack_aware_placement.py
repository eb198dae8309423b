"""Kafka's rack-aware replica placement (controller.assign_replicas_rack_aware)."""

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strom.cluster.controller import assign_replicas_rack_aware, rack_alternated
from strom.protocol.errors import KafkaError


def test_rack_alternated_takes_one_broker_per_rack_in_turn():
    racks = {0: "rack1", 1: "rack1", 2: "rack1", 3: "rack2", 4: "rack2", 5: "rack2",
             6: "rack3", 7: "rack3", 8: "rack3"}
    assert rack_alternated(racks) == [0, 3, 6, 1, 4, 7, 2, 5, 8]


def test_rack_alternated_with_uneven_racks():
    racks = {0: "a", 1: "b", 2: "b", 3: "b", 4: "c"}
    assert rack_alternated(racks) == [0, 1, 4, 2, 3]


def test_every_partition_spans_all_racks_when_rf_equals_racks():
    racks = {0: "rack1", 1: "rack2", 2: "rack2", 3: "rack3", 4: "rack3", 5: "rack1"}
    assignment = assign_replicas_rack_aware(racks, 12, 3, start_index=0, shift=0)
    for replicas in assignment.values():
        assert len(set(replicas)) == 3
        assert {racks[b] for b in replicas} == {"rack1", "rack2", "rack3"}
    # leaders round-robin over the brokers: each leads twice
    assert Counter(r[0] for r in assignment.values()) == Counter({b: 2 for b in racks})


def test_rf_larger_than_brokers_is_refused():
    with pytest.raises(KafkaError) as e:
        assign_replicas_rack_aware({1: "a", 2: "b"}, 1, 3)
    assert "larger than available brokers: 2" in e.value.message


@given(st.dictionaries(st.integers(0, 20), st.sampled_from("abcd"), min_size=1, max_size=9),
       st.integers(1, 20), st.data())
def test_racks_are_used_before_any_rack_is_reused(racks, partitions, data):
    rf = data.draw(st.integers(1, len(racks)))
    assignment = assign_replicas_rack_aware(racks, partitions, rf)
    num_racks = len(set(racks.values()))
    assert sorted(assignment) == list(range(partitions))
    for replicas in assignment.values():
        assert len(replicas) == rf and len(set(replicas)) == rf
        assert set(replicas) <= set(racks)
        assert len({racks[b] for b in replicas}) == min(rf, num_racks)
