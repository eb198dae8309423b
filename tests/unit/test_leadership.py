"""cluster/leadership.py against an in-memory store and a fake controller office: preferred
and unclean elections (each outcome and its Kafka error), and the automatic preferred-leader
rebalance with its imbalance threshold."""

from __future__ import annotations

import asyncio

import pytest
from cluster_fakes import FakeOffice, MemoryStore, add_broker, add_topic

from strom.cluster import leadership, model
from strom.cluster.controller import Controller
from strom.protocol.errors import InvalidRequest, NotController, UnknownTopicOrPartition


async def office(brokers=(1, 2, 3), topics=None, config=None) -> FakeOffice:
    store = MemoryStore()
    for b in brokers:
        await add_broker(store, b)
    for name, partitions in (topics or {}).items():
        await add_topic(store, name, partitions)
    return await FakeOffice(store, config).start()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_controller_implements_the_context():
    for name in ("require_active", "live_brokers", "live_set", "update_state"):
        assert callable(getattr(Controller, name))


def test_preferred_election_moves_leadership_to_the_first_replica():
    async def main():
        o = await office(topics={"t": {0: ((1, 2, 3), 2, (1, 2, 3)),
                                       1: ((1, 2, 3), 1, (1, 2, 3))}})
        results = await leadership.elect_leaders(o, leadership.PREFERRED, [("t", 0), ("t", 1)])
        assert results[("t", 0)] is None
        assert isinstance(results[("t", 1)], leadership.ElectionNotNeeded)
        st = o.store.state("t", 0)
        assert (st.leader, st.leader_epoch, st.isr, st.controller_epoch) == (1, 1, (1, 2, 3), 7)
        assert o.store.state("t", 1).leader_epoch == 0  # not written

    run(main())


@pytest.mark.parametrize("dead, isr", [({1}, (1, 2)), (set(), (2, 3))])
def test_preferred_election_needs_a_live_in_sync_preferred_replica(dead, isr):
    async def main():
        o = await office(topics={"t": {0: ((1, 2, 3), 2, isr)}})
        o.dead = dead
        results = await leadership.elect_leaders(o, leadership.PREFERRED, [("t", 0)])
        assert isinstance(results[("t", 0)], leadership.PreferredLeaderNotAvailable)
        assert o.store.state("t", 0).leader == 2

    run(main())


def test_unclean_election_prefers_a_live_isr_member_then_any_live_replica():
    async def main():
        o = await office(topics={"t": {0: ((1, 2, 3), 1, (1, 3)),   # 3 is in sync
                                       1: ((1, 2, 3), 1, (1,)),     # nobody else in sync
                                       2: ((1, 2, 3), 2, (1, 2))}})  # leader 2 is live
        o.dead = {1}
        results = await leadership.elect_leaders(o, leadership.UNCLEAN, None)
        assert results == {("t", 0): None, ("t", 1): None, ("t", 2): results[("t", 2)]}
        assert isinstance(results[("t", 2)], leadership.ElectionNotNeeded)
        st0, st1 = o.store.state("t", 0), o.store.state("t", 1)
        assert (st0.leader, st0.leader_epoch, st0.isr) == (3, 1, (3,))
        assert (st1.leader, st1.leader_epoch, st1.isr) == (2, 1, (2,))

    run(main())


def test_unclean_election_without_a_live_replica():
    async def main():
        o = await office(topics={"t": {0: ((1, 2), 1, (1, 2))}})
        o.dead = {1, 2}
        results = await leadership.elect_leaders(o, leadership.UNCLEAN, [("t", 0)])
        assert isinstance(results[("t", 0)], leadership.EligibleLeadersNotAvailable)
        assert o.store.state("t", 0).leader == 1

    run(main())


def test_unknown_partitions_bad_type_and_not_controller():
    async def main():
        o = await office(topics={"t": {0: ((1,), 1, (1,))}})
        results = await leadership.elect_leaders(o, leadership.PREFERRED,
                                                 [("t", 5), ("nope", 0)])
        assert all(isinstance(e, UnknownTopicOrPartition) for e in results.values())
        with pytest.raises(InvalidRequest):
            await leadership.elect_leaders(o, 9, None)
        o.active = False
        with pytest.raises(NotController):
            await leadership.elect_leaders(o, leadership.PREFERRED, None)

    run(main())


def test_a_state_that_cannot_be_written_is_reported():
    async def main():
        o = await office(topics={"t": {0: ((1, 2), 2, (1, 2)), 1: ((1, 2), 2, (1, 2))}})
        await o.store.delete(model.partition_state_path("t", 0))
        o.store.lose_races(model.partition_state_path("t", 1), 10)
        results = await leadership.elect_leaders(o, leadership.PREFERRED, None)
        assert isinstance(results[("t", 0)], leadership.EligibleLeadersNotAvailable)
        assert isinstance(results[("t", 1)], leadership.EligibleLeadersNotAvailable)
        assert o.store.state("t", 1).leader == 2

    run(main())


def test_rebalance_moves_leaders_of_brokers_above_the_imbalance_threshold():
    async def main():
        # broker 1 is the preferred leader of 4 partitions and leads 3 of them (25% off);
        # broker 2 of 2 and leads both; broker 3 of 1 but is out of sync
        o = await office(topics={
            "a": {0: ((1, 2), 1, (1, 2)), 1: ((1, 2), 1, (1, 2)), 2: ((1, 2), 1, (1, 2)),
                  3: ((1, 2), 2, (1, 2))},
            "b": {0: ((2, 1), 2, (1, 2)), 1: ((2, 1), 2, (1, 2)), 2: ((3, 1), 1, (1,))},
        }, config={"leader.imbalance.per.broker.percentage": 20})
        assert await leadership.rebalance_once(o) == [("a", 3)]
        assert o.store.state("a", 3).leader == 1
        assert o.store.state("b", 2).leader == 1
        await o.cache.refresh_now({"a"})
        assert await leadership.rebalance_once(o) == []

    run(main())


def test_rebalance_below_the_threshold_and_during_a_reassignment_does_nothing():
    async def main():
        o = await office(topics={"a": {p: ((1, 2), 2 if p == 0 else 1, (1, 2))
                                       for p in range(10)}})  # 10% off: not above 10%
        assert await leadership.rebalance_once(o) == []
        # a partition being reassigned is left alone even when its broker is imbalanced
        a = o.store.assignment("a")
        moving = model.TopicAssignment("a", a.topic_id, {**a.replicas, 0: (1, 2, 3)},
                                       adding={0: (3,)}, removing={})
        await o.store.set(model.topic_path("a"), moving.to_json())
        await o.cache.refresh_now({"a"})
        o.config = type(o.config)({"leader.imbalance.per.broker.percentage": 0})
        assert await leadership.rebalance_once(o) == []
        assert o.store.state("a", 0).leader == 2

    run(main())
