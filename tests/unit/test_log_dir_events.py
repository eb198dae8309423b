"""KIP-112 at the controller: a broker's reported failed log dir makes its replicas there
offline, as if the broker were dead for those partitions only; a partition with no other
replica to lead goes offline until the broker is back."""

from __future__ import annotations

import asyncio
import json

from cluster_fakes import MemoryStore, add_broker, add_topic

from strom.cluster import leadership, model
from strom.cluster.controller import Controller
from strom.cluster.metadata_cache import MetadataCache
from strom.config import BrokerConfig
from strom.protocol.errors import ErrorCode


async def controller(store: MemoryStore) -> Controller:
    await store.create(model.CONTROLLER_EPOCH, b"7")
    c = Controller(1, store, MetadataCache(store), BrokerConfig({}))
    c.active, c.epoch, c.epoch_version = True, 7, 0
    return c


def test_offline_replicas_move_leadership_and_leave_the_isr():
    async def main():
        store = MemoryStore()
        for b in (1, 2, 3):
            await add_broker(store, b)
        await add_topic(store, "failed", {0: ((1, 2, 3), 1, (1, 2, 3)),
                                          1: ((2, 1, 3), 2, (2, 1, 3))})
        await add_topic(store, "healthy", {0: ((1, 2, 3), 1, (1, 2, 3))})
        await add_topic(store, "alone", {0: ((1,), 1, (1,))})
        c = await controller(store)
        await store.create(model.log_dir_event_path(1, 0), model.encode_log_dir_event(
            1, [("failed", 0), ("failed", 1), ("alone", 0)]))
        await c.on_brokers_changed()
        led = store.state("failed", 0)
        assert (led.leader, led.leader_epoch, led.isr) == (2, 1, (2, 3))
        followed = store.state("failed", 1)
        assert (followed.leader, followed.leader_epoch, followed.isr) == (2, 0, (2, 3))
        healthy = store.state("healthy", 0)
        assert (healthy.leader, healthy.isr) == (1, (1, 2, 3))
        # no other replica can lead: offline, as Kafka's OfflinePartition (leader -1, the
        # ISR of one kept so that broker 1 can lead again)
        alone = store.state("alone", 0)
        assert (alone.leader, alone.leader_epoch, alone.isr) == (-1, 1, (1,))
        # every broker's cache knows the offline replicas (Metadata's offline_replicas)
        cache = MetadataCache(store)
        await cache.start()
        assert cache.failed_replicas == {("failed", 0): {1}, ("failed", 1): {1},
                                         ("alone", 0): {1}}
        # an election asked for (preferred, or unclean) cannot pick the failed replica
        results = await leadership.elect_leaders(c, leadership.PREFERRED,
                                                 [("failed", 0), ("alone", 0)])
        assert all(e is not None and e.code == ErrorCode.preferred_leader_not_available
                   for e in results.values()), results
        results = await leadership.elect_leaders(c, leadership.UNCLEAN, [("alone", 0)])
        assert results[("alone", 0)].code == ErrorCode.eligible_leaders_not_available
        assert store.state("alone", 0).leader == -1
        # broker 1 restarts with its dir back: it deletes its event, and leads again
        await store.delete(model.log_dir_event_path(1, 0))
        await c.on_brokers_changed()
        alone = store.state("alone", 0)
        assert (alone.leader, alone.leader_epoch, alone.isr) == (1, 2, (1,))

    asyncio.run(main())


def test_events_of_unregistered_brokers_and_malformed_ones_are_ignored():
    async def main():
        store = MemoryStore()
        for b in (1, 2, 3):
            await add_broker(store, b)
        await add_topic(store, "t", {0: ((3, 2, 1), 3, (3, 2, 1))})
        c = await controller(store)
        await store.create(model.log_dir_event_path(4, 0),
                           model.encode_log_dir_event(4, [("t", 0)]))
        await store.create(f"{model.LOG_DIR_EVENT_NOTIFICATION}/log_dir_event_x", b"{")
        await c.on_brokers_changed()
        st = store.state("t", 0)
        assert (st.leader, st.isr) == (3, (3, 2, 1))

    asyncio.run(main())


def test_event_round_trip_is_kafkas_format_plus_partitions():
    data = model.encode_log_dir_event(5, [("b", 1), ("a", 0)])
    assert {k: v for k, v in json.loads(data).items() if k != "partitions"} == \
        {"version": 1, "broker": 5, "event": 1}
    assert model.decode_log_dir_event(data) == (5, [("a", 0), ("b", 1)])
