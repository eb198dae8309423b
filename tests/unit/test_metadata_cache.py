"""cluster/metadata_cache.py against an in-memory store: what a start loads, how watches
keep the view current (listeners told which topics changed), refresh_now, the queries, and
no refresh after stop."""

from __future__ import annotations

import asyncio
import json

from cluster_fakes import MemoryStore, add_broker, add_topic, set_isr, wait_for

from strom.cluster import model
from strom.cluster.metadata_cache import MetadataCache


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def started(store: MemoryStore) -> tuple[MetadataCache, list[set[str]]]:
    cache = MetadataCache(store)
    changes: list[set[str]] = []
    cache.on_change(changes.append)
    await cache.start()
    return cache, changes


def test_start_loads_brokers_controller_cluster_id_and_topics():
    async def main():
        store = MemoryStore()
        await add_broker(store, 1, rack="r1")
        await add_broker(store, 2)
        await store.create(model.CONTROLLER, json.dumps({"brokerid": 2}).encode())
        await store.create(model.CLUSTER_ID, json.dumps({"version": "1", "id": "c1"}).encode())
        tid = await add_topic(store, "t", {0: ((1, 2), 1, (1, 2)), 1: ((2, 1), 2, (2,))},
                              configs={"retention.ms": "1000"})
        # a partition whose state node is missing (its creator died before writing it)
        await store.delete(model.partition_state_path("t", 1))
        cache, changes = await started(store)
        assert sorted(cache.brokers) == [1, 2] and cache.brokers[1].rack == "r1"
        assert (cache.controller_id, cache.cluster_id) == (2, "c1")
        t = cache.topic("t")
        assert (t.topic_id, t.configs, t.reassigning) == (tid, {"retention.ms": "1000"},
                                                           frozenset())
        assert (t.partitions[0].leader, t.partitions[0].isr) == (1, (1, 2))
        assert t.partitions[1].state == model.PartitionState(model.NO_LEADER, -1, ())
        assert changes == [{"t"}]

    run(main())


def test_watches_follow_state_config_topic_and_broker_changes():
    async def main():
        store = MemoryStore()
        await add_broker(store, 1)
        await add_topic(store, "t", {0: ((1, 2), 1, (1, 2))})
        cache, changes = await started(store)
        changes.clear()

        await set_isr(store, "t", 0, (1,))
        await wait_for(lambda: cache.partition("t", 0).isr == (1,))
        await store.create(model.topic_config_path("t"),
                           model.encode_topic_config({"cleanup.policy": "compact"}))
        await wait_for(lambda: cache.topic("t").configs == {"cleanup.policy": "compact"})
        a = store.assignment("t")
        await store.set(model.topic_path("t"), model.TopicAssignment(
            "t", a.topic_id, {0: (1, 2, 3)}, adding={0: (3,)}).to_json())
        await wait_for(lambda: cache.topic("t").reassigning == {0})
        await add_topic(store, "u", {0: ((1,), 1, (1,))})
        await wait_for(lambda: cache.topic("u") is not None)
        await store.delete(model.topic_path("t"), recursive=True)
        await wait_for(lambda: cache.topic("t") is None)
        assert all(c <= {"t", "u"} for c in changes) and {"t"} in changes

        await add_broker(store, 2)
        await store.create(model.CONTROLLER, json.dumps({"brokerid": 2}).encode())
        await wait_for(lambda: sorted(cache.brokers) == [1, 2] and cache.controller_id == 2)
        await store.delete(model.broker_path(1))
        await wait_for(lambda: sorted(cache.brokers) == [2])

    run(main())


def test_refresh_now_shows_a_write_at_once():
    async def main():
        store = MemoryStore()
        await add_topic(store, "t", {0: ((1,), 1, (1,))})
        cache, changes = await started(store)
        changes.clear()
        await set_isr(store, "t", 0, ())
        await cache.refresh_now({"t"})  # no yield to the loop in between
        assert cache.partition("t", 0).isr == ()
        assert changes == [{"t"}]

    run(main())


def test_queries():
    async def main():
        store = MemoryStore()
        info = model.BrokerInfo(1, (model.Endpoint("INTERNAL", "10.0.0.1", 9093),
                                    model.Endpoint("EXTERNAL", "h", 9094)))
        await store.create(model.broker_path(1), info.to_json())
        tid = await add_topic(store, "t", {0: ((1,), 1, (1,))})
        cache, _ = await started(store)
        assert cache.topic_by_id(tid).name == "t"
        assert cache.topic_by_id(None) is None
        assert cache.partition("t", 0).replicas == (1,)
        assert cache.partition("t", 1) is None and cache.partition("x", 0) is None
        assert cache.endpoint(1, "EXTERNAL") == model.Endpoint("EXTERNAL", "h", 9094)
        # an unknown listener name falls back to the first endpoint
        assert cache.endpoint(1, "OTHER").listener == "INTERNAL"
        assert cache.endpoint(2, "INTERNAL") is None
        assert cache.controller_id == -1

    run(main())


def test_no_refresh_after_stop():
    async def main():
        store = MemoryStore()
        await add_topic(store, "t", {0: ((1,), 1, (1,))})
        cache, changes = await started(store)
        changes.clear()
        cache.stop()
        # watches fire in the order they were set: once these two have, the cache's have
        fired: list[str] = []
        store.watch_data(model.partition_state_path("t", 0), fired.append)
        store.watch_children(model.BROKER_IDS, fired.append)
        await set_isr(store, "t", 0, ())
        await add_broker(store, 5)
        await wait_for(lambda: len(fired) == 2)
        assert cache.partition("t", 0).isr == (1,)
        assert 5 not in cache.brokers and changes == []

    run(main())
