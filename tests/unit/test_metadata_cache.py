"""cluster/metadata_cache.py against an in-memory store: what a start loads, how watches
keep the view current (listeners told which topics changed), refresh_now, the queries, no
refresh after stop, a failed refresh tried again until it loads (a watch fires once per
change), and a failing listener not keeping the others from being told."""

from __future__ import annotations

import asyncio
import json
import uuid

from cluster_fakes import MemoryStore, add_broker, add_topic, set_isr, wait_for

from strom.cluster import model
from strom.cluster.metadata_cache import MetadataCache
from strom.cluster.store import StoreError


class FlakyStore(MemoryStore):
    """Reads of a path in `failing` raise StoreError (ZooKeeper unreachable, a timed-out
    request) while its count lasts."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: dict[str, int] = {}

    def _maybe_fail(self, path: str) -> None:
        if self.failing.get(path, 0) > 0:
            self.failing[path] -= 1
            raise StoreError(f"zookeeper get {path}: ConnectionLoss")

    async def get(self, path: str):
        self._maybe_fail(path)
        return await super().get(path)

    async def get_children(self, path: str) -> list[str]:
        self._maybe_fail(path)
        return await super().get_children(path)


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


def test_a_failed_refresh_is_tried_again_until_it_loads():
    # The one watch event of a change whose load fails must not be lost: before, the
    # cache kept the old state until the topic changed again (a coordinator that never
    # loaded a partition it had become leader of answered NOT_COORDINATOR meanwhile).
    async def main():
        store = FlakyStore()
        await add_broker(store, 1)
        await add_topic(store, "t", {0: ((1, 2), 1, (1, 2)), 1: ((2, 1), 2, (2, 1))})
        cache, changes = await started(store)
        changes.clear()
        store.failing[model.partition_state_path("t", 1)] = 2
        st = store.state("t", 0)
        await store.set(model.partition_state_path("t", 0), model.PartitionState(
            2, st.leader_epoch + 1, (2,), 1).to_json(), st.version)  # one watch event
        await wait_for(lambda: cache.partition("t", 0).leader == 2)
        assert store.failing[model.partition_state_path("t", 1)] == 0  # failed twice
        assert changes == [{"t"}]  # told once, after the load that succeeded

        # the same for the broker list, and for a whole reload after a reconnection
        store.failing[model.BROKER_IDS] = 1
        await add_broker(store, 2)
        await wait_for(lambda: sorted(cache.brokers) == [1, 2])
        store.failing[model.TOPICS] = 1
        await add_topic(store, "u", {0: ((1,), 1, (1,))})
        await wait_for(lambda: cache.topic("u") is not None)

    run(main())


def test_refresh_now_raises_the_store_error_and_the_load_is_retried():
    async def main():
        store = FlakyStore()
        await add_topic(store, "t", {0: ((1,), 1, (1,))})
        cache, changes = await started(store)
        changes.clear()
        store.failing[model.partition_state_path("t", 0)] = 1
        # a change whose watch event is spent already (written past the watches)
        path = model.partition_state_path("t", 0)
        data, version = store.nodes[path]
        store.nodes[path] = (model.PartitionState(1, 0, (), 1).to_json(), version + 1)
        try:
            await cache.refresh_now({"t"})
        except StoreError:
            pass
        else:
            raise AssertionError("refresh_now hid the store error")
        await wait_for(lambda: cache.partition("t", 0).isr == ())
        assert {"t"} in changes

    run(main())


def test_a_failing_listener_does_not_keep_the_others_from_being_told():
    async def main():
        store = MemoryStore()
        await add_topic(store, "t", {0: ((1,), 1, (1,))})
        cache = MetadataCache(store)
        told: list[set[str]] = []

        def broken(_topics: set[str]) -> None:
            raise OSError(28, "No space left on device")

        cache.on_change(broken)
        cache.on_change(told.append)
        await cache.start()
        await set_isr(store, "t", 0, ())
        await wait_for(lambda: told[-1:] == [{"t"}] and cache.partition("t", 0).isr == ())
        await set_isr(store, "t", 0, (1,))  # the cache goes on following changes
        await wait_for(lambda: cache.partition("t", 0).isr == (1,))
        assert len(told) == 3

    run(main())


def test_topic_by_id_follows_deletion_and_a_topic_made_anew_under_its_name():
    """Fetch v13+ names topics by id: the map of ids the loads keep answers for the topic
    now under the name, never an old id's; a topic put into `topics` by other means is
    still found (by the scan, which mends the map)."""
    async def main():
        store = MemoryStore()
        old = await add_topic(store, "t", {0: ((1,), 1, (1,))})
        cache, _ = await started(store)
        assert cache.topic_by_id(old).name == "t"
        await store.delete(model.topic_path("t"), recursive=True)
        await cache.refresh_now({"t"})
        assert cache.topic("t") is None and cache.topic_by_id(old) is None
        new = await add_topic(store, "t", {0: ((1,), 1, (1,))})
        await cache.refresh_now({"t"})
        assert new != old
        assert cache.topic_by_id(new).name == "t" and cache.topic_by_id(old) is None
        assert old not in cache._names_by_id  # nothing kept for ids that are gone
        other = model.TopicInfo("u", uuid.uuid4(), {}, {})
        cache.topics["u"] = other
        assert cache.topic_by_id(other.topic_id) is other
        del cache.topics["u"]
        assert cache.topic_by_id(other.topic_id) is None

    run(main())
