"""Fakes for unit tests of strom/cluster: an in-memory MetadataStore and a controller office
(ControllerContext) over it. No sockets, no files.

MemoryStore keeps the LocalMetadataStore's semantics (versions, compare-and-set, fences,
recursive delete, watches fired on the event loop after a change) and can make the next
writes to a path lose a race (`lose_races`), as a concurrent writer would.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from collections.abc import Callable

from strom.cluster import model
from strom.cluster.metadata_cache import MetadataCache
from strom.cluster.store import (
    BadVersionError,
    Fence,
    FencedError,
    MetadataStore,
    NodeExistsError,
    NoNodeError,
    WatchCallback,
)
from strom.config import BrokerConfig
from strom.protocol.errors import NotController


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class MemoryStore(MetadataStore):
    def __init__(self) -> None:
        self.nodes: dict[str, tuple[bytes, int]] = {"/": (b"", 0)}
        self.child_watches: dict[str, list[WatchCallback]] = defaultdict(list)
        self.data_watches: dict[str, list[WatchCallback]] = defaultdict(list)
        self.races: dict[str, list[Callable[[], None]]] = defaultdict(list)
        self.writes: list[str] = []  # paths set or created, in order

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def lose_races(self, path: str, times: int, change: Callable[[], None] | None = None
                   ) -> None:
        """The next `times` sets of `path` with a version find it moved (BadVersionError);
        `change` (default: bump the version) runs before each, as the other writer."""
        def bump() -> None:
            data, version = self.nodes[path]
            self.nodes[path] = (data, version + 1)

        self.races[path] += [change or bump] * times

    def _fire(self, path: str, children_of: str | None) -> None:
        loop = asyncio.get_running_loop()
        for cb in self.data_watches.get(path, ()):
            loop.call_soon(cb, path)
        if children_of is not None:
            for cb in self.child_watches.get(children_of, ()):
                loop.call_soon(cb, children_of)

    def _check_fence(self, fence: Fence | None) -> None:
        if fence is not None:
            node = self.nodes.get(fence[0])
            if node is None or node[1] != fence[1]:
                raise FencedError(f"{fence[0]} is not at version {fence[1]}")

    async def get(self, path: str) -> tuple[bytes, int] | None:
        return self.nodes.get(path)

    async def get_children(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):] for p in self.nodes
                       if p.startswith(prefix) and "/" not in p[len(prefix):]})

    async def create(self, path: str, data: bytes = b"", ephemeral: bool = False,
                     make_parents: bool = True, fence: Fence | None = None) -> None:
        self._check_fence(fence)
        if path in self.nodes:
            raise NodeExistsError(path)
        parent = _parent(path)
        while parent not in self.nodes:
            if not make_parents:
                raise NoNodeError(parent)
            self.nodes[parent] = (b"", 0)
            parent = _parent(parent)
        self.nodes[path] = (data, 0)
        self.writes.append(path)
        self._fire(path, _parent(path))

    async def set(self, path: str, data: bytes, version: int = -1,
                  fence: Fence | None = None) -> int:
        self._check_fence(fence)
        if path not in self.nodes:
            raise NoNodeError(path)
        if version != -1 and self.races.get(path):
            self.races[path].pop(0)()
        current = self.nodes[path][1]
        if version != -1 and current != version:
            raise BadVersionError(f"{path}: version {current}, expected {version}")
        self.nodes[path] = (data, current + 1)
        self.writes.append(path)
        self._fire(path, None)
        return current + 1

    async def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        if path not in self.nodes:
            raise NoNodeError(path)
        if version != -1 and self.nodes[path][1] != version:
            raise BadVersionError(path)
        children = [p for p in self.nodes if p.startswith(path + "/")]
        if children and not recursive:
            raise NodeExistsError(f"{path} has children")
        for p in children + [path]:
            del self.nodes[p]
            self._fire(p, _parent(p))

    def watch_children(self, path: str, callback: WatchCallback) -> None:
        self.child_watches[path].append(callback)

    def watch_data(self, path: str, callback: WatchCallback) -> None:
        self.data_watches[path].append(callback)

    # --- reading back what was written ---------------------------------------------------
    def state(self, topic: str, p: int) -> model.PartitionState:
        data, version = self.nodes[model.partition_state_path(topic, p)]
        return model.PartitionState.from_json(data, version)

    def assignment(self, topic: str) -> model.TopicAssignment:
        data, version = self.nodes[model.topic_path(topic)]
        return model.TopicAssignment.from_json(topic, data, version)


async def add_broker(store: MemoryStore, broker_id: int, rack: str | None = None) -> None:
    info = model.BrokerInfo(broker_id, (model.Endpoint("PLAINTEXT", "127.0.0.1",
                                                       9000 + broker_id),), rack)
    await store.create(model.broker_path(broker_id), info.to_json(), ephemeral=True)


async def add_topic(store: MemoryStore, name: str,
                    partitions: dict[int, tuple[tuple[int, ...], int, tuple[int, ...]]],
                    configs: dict[str, str] | None = None) -> uuid.UUID:
    """partitions: {p: (replicas, leader, isr)}; every state at leader epoch 0."""
    topic_id = uuid.uuid4()
    if configs is not None:
        await store.create(model.topic_config_path(name), model.encode_topic_config(configs))
    assignment = model.TopicAssignment(name, topic_id, {p: r for p, (r, _, _) in
                                                        partitions.items()})
    await store.create(model.topic_path(name), assignment.to_json())
    for p, (_, leader, isr) in partitions.items():
        await store.create(model.partition_state_path(name, p),
                           model.PartitionState(leader, 0, isr, 1).to_json())
    return topic_id


async def set_isr(store: MemoryStore, topic: str, p: int, isr: tuple[int, ...]) -> None:
    """What a partition leader does when a follower catches up (or falls behind)."""
    st = store.state(topic, p)
    await store.set(model.partition_state_path(topic, p),
                    model.PartitionState(st.leader, st.leader_epoch, isr,
                                         st.controller_epoch).to_json(), st.version)


class FakeOffice:
    """A ControllerContext over a MemoryStore: the active controller at epoch 7, its
    CONTROLLER_EPOCH node at version `fence_version`. `dead` brokers are registered but
    count as not live."""

    def __init__(self, store: MemoryStore, config: dict | None = None) -> None:
        self.store = store
        self.cache = MetadataCache(store)
        self.config = BrokerConfig(config or {})
        self.epoch = 7
        self.active = True
        self.lock = asyncio.Lock()
        self.dead: set[int] = set()
        self.fence_version = 0

    async def start(self) -> FakeOffice:
        await self.store.create(model.CONTROLLER_EPOCH, b"7")
        await self.store.create(model.CONTROLLER, json.dumps({"brokerid": 1}).encode())
        await self.cache.start()
        return self

    def require_active(self) -> None:
        if not self.active:
            raise NotController("This broker is not the controller")

    def live_brokers(self) -> list[int]:
        return sorted(set(self.cache.brokers) - self.dead)

    async def live_set(self) -> set[int]:
        return {int(b) for b in await self.store.get_children(model.BROKER_IDS)} - self.dead

    async def update_state(self, name: str, p: int, change) -> model.PartitionState | None:
        path = model.partition_state_path(name, p)
        for _ in range(10):
            node = await self.store.get(path)
            if node is None:
                return None
            new = change(model.PartitionState.from_json(node[0], node[1]))
            if new is None:
                return None
            try:
                await self.store.set(path, new.to_json(), node[1],
                                     fence=(model.CONTROLLER_EPOCH, self.fence_version))
            except BadVersionError:
                continue
            return new
        return None


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Yield to the event loop until `cond()` holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)
