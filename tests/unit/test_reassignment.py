"""cluster/reassignment.py against an in-memory store and a fake controller office: the two
steps of a reassignment (KIP-455), cancel and replace, the checks on a target, lost races on
the topic node, and the list of ongoing moves."""

from __future__ import annotations

import asyncio

import pytest
from cluster_fakes import FakeOffice, MemoryStore, add_broker, add_topic, set_isr

from strom.cluster import model, reassignment
from strom.protocol.errors import (
    InvalidReplicaAssignment,
    InvalidReplicationFactor,
    NotController,
    UnknownTopicOrPartition,
)


async def office(brokers=(1, 2, 3, 4), topics=None) -> FakeOffice:
    store = MemoryStore()
    for b in brokers:
        await add_broker(store, b)
    for name, partitions in (topics or {"t": {0: ((1, 2), 1, (1, 2)),
                                              1: ((2, 3), 2, (2, 3))}}).items():
        await add_topic(store, name, partitions)
    return await FakeOffice(store).start()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_reassignment_adds_first_and_completes_once_the_target_is_in_sync():
    async def main():
        o = await office()
        assert await reassignment.alter(o, {("t", 0): [3, 2]}) == {("t", 0): None}
        a = o.store.assignment("t")
        assert (a.replicas[0], a.adding[0], a.removing[0]) == ((3, 2, 1), (3,), (1,))
        assert a.replicas[1] == (2, 3) and 1 not in a.adding
        assert o.store.state("t", 0).leader == 1  # nothing moves before 3 is in sync
        assert await reassignment.ongoing(o) == [
            reassignment.OngoingReassignment("t", 0, (3, 2, 1), (3,), (1,))]

        await o.cache.refresh_now({"t"})
        assert await reassignment.progress_once(o) == []  # 3 is not in the ISR yet
        await set_isr(o.store, "t", 0, (1, 2, 3))
        assert await reassignment.progress_once(o) == [("t", 0)]
        a = o.store.assignment("t")
        assert (a.replicas[0], a.adding, a.removing) == ((3, 2), {}, {})
        st = o.store.state("t", 0)
        # leadership left the removed replica (a new epoch), then the ISR shrank
        assert (st.leader, st.leader_epoch, st.isr, st.controller_epoch) == (3, 1, (2, 3), 7)
        assert await reassignment.ongoing(o) == []

    run(main())


def test_a_leader_within_the_target_keeps_its_epoch():
    async def main():
        o = await office()
        await reassignment.alter(o, {("t", 1): [2, 4]})
        await set_isr(o.store, "t", 1, (2, 3, 4))
        await o.cache.refresh_now({"t"})
        assert await reassignment.progress_once(o) == [("t", 1)]
        st = o.store.state("t", 1)
        assert (st.leader, st.leader_epoch, st.isr) == (2, 0, (2, 4))
        assert o.store.assignment("t").replicas[1] == (2, 4)

    run(main())


def test_cancel_goes_back_to_the_original_replicas_and_drops_the_added_ones():
    async def main():
        o = await office()
        await reassignment.alter(o, {("t", 0): [3, 4]})
        # 3 caught up and even became leader before the cancel
        st = o.store.state("t", 0)
        await o.store.set(model.partition_state_path("t", 0),
                          model.PartitionState(3, 1, (3, 1, 2), 7).to_json(), st.version)
        assert await reassignment.alter(o, {("t", 0): None}) == {("t", 0): None}
        a = o.store.assignment("t")
        assert (a.replicas[0], a.adding, a.removing) == ((1, 2), {}, {})
        st = o.store.state("t", 0)
        assert (st.leader, st.leader_epoch, st.isr) == (1, 2, (1, 2))
        result = await reassignment.alter(o, {("t", 0): None})
        assert isinstance(result[("t", 0)], reassignment.NoReassignmentInProgress)

    run(main())


def test_a_new_target_starts_again_from_the_original_replicas():
    async def main():
        o = await office()
        await reassignment.alter(o, {("t", 0): [3, 4]})
        await reassignment.alter(o, {("t", 0): [2, 4]})
        a = o.store.assignment("t")
        assert (a.replicas[0], a.adding[0], a.removing[0]) == ((2, 4, 1), (4,), (1,))

    run(main())


@pytest.mark.parametrize("target, error", [
    ([], InvalidReplicaAssignment),
    ([2, 2], InvalidReplicaAssignment),
    ([-1, 2], InvalidReplicaAssignment),
    ([2, 9], InvalidReplicaAssignment),  # no such broker
    ([2, 3, 4], InvalidReplicationFactor),  # with keep_replication_factor
])
def test_bad_targets_are_refused_and_change_nothing(target, error):
    async def main():
        o = await office()
        before = o.store.nodes[model.topic_path("t")]
        result = await reassignment.alter(o, {("t", 0): target}, keep_replication_factor=True)
        assert isinstance(result[("t", 0)], error)
        assert o.store.nodes[model.topic_path("t")] == before

    run(main())


def test_an_offline_broker_and_unknown_partitions_are_refused():
    async def main():
        o = await office()
        o.dead = {4}
        result = await reassignment.alter(o, {("t", 0): [1, 4], ("t", 7): [1, 2],
                                              ("nope", 0): [1, 2]})
        assert isinstance(result[("t", 0)], InvalidReplicaAssignment)
        assert isinstance(result[("t", 7)], UnknownTopicOrPartition)
        assert isinstance(result[("nope", 0)], UnknownTopicOrPartition)
        o.active = False
        with pytest.raises(NotController):
            await reassignment.alter(o, {("t", 0): [1, 3]})

    run(main())


def test_a_topic_node_that_keeps_moving_is_retried_then_given_up():
    async def main():
        o = await office()
        o.store.lose_races(model.topic_path("t"), 4)
        assert await reassignment.alter(o, {("t", 0): [1, 3]}) == {("t", 0): None}
        assert o.store.assignment("t").adding == {0: (3,)}
        o.store.lose_races(model.topic_path("t"), 5)
        result = await reassignment.alter(o, {("t", 1): [3, 4]})
        assert isinstance(result[("t", 1)], reassignment.RequestTimedOut)
        assert 1 not in o.store.assignment("t").adding

    run(main())


def test_ongoing_lists_only_the_partitions_asked_for():
    async def main():
        o = await office()
        await reassignment.alter(o, {("t", 0): [1, 3], ("t", 1): [2, 4]})
        assert [(r.topic, r.partition) for r in await reassignment.ongoing(o)] == [
            ("t", 0), ("t", 1)]
        assert [r.partition for r in await reassignment.ongoing(o, [("t", 1)])] == [1]
        assert await reassignment.ongoing(o, [("nope", 0)]) == []

    run(main())
