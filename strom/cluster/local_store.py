"""The `local` MetadataStore: one broker, metadata in a JSON file in its first log dir.

The whole tree is kept in memory and written atomically (temp file, fsync, rename), so a
crash leaves either the old or the new tree. The write runs in the default executor, never
on the loop: a change is made in memory at once (so compare-and-set stays atomic), then the
call waits until a write that includes it is on disk, and only then returns and fires the
watches. Writes are ordered (one at a time, each a snapshot of the tree taken on the loop)
and coalesced (changes made while a write runs go together in the next one). Ephemeral
nodes live only in memory, as a ZooKeeper session's would. Watches fire on the event loop
after a change.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections import defaultdict

from strom.cluster import store
from strom.log.checkpoint import write_atomically
from strom.tasks import spawn

log = logging.getLogger(__name__)

FILE_NAME = "strom-metadata.json"


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class LocalMetadataStore(store.MetadataStore):
    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, FILE_NAME)
        self.nodes: dict[str, tuple[bytes, int]] = {"/": (b"", 0)}
        self.ephemeral: set[str] = set()
        self._child_watches: dict[str, list[store.WatchCallback]] = defaultdict(list)
        self._data_watches: dict[str, list[store.WatchCallback]] = defaultdict(list)
        # changes made in memory, and how many of them are on disk; callers waiting for
        # theirs: (change number, future); the task writing (one at a time)
        self._changes = 0
        self._written = 0
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            with open(self.path, encoding="utf-8") as f:
                stored = json.load(f)
        except FileNotFoundError:
            return
        for path, (data, version) in stored["nodes"].items():
            self.nodes[path] = (base64.b64decode(data), version)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.wait([self._writer])  # its failure is logged (strom/tasks.py)
        for path in list(self.ephemeral):
            self.nodes.pop(path, None)
        self.ephemeral.clear()

    async def _persist(self) -> None:
        """Wait until the tree as it is now is on disk (written off the loop)."""
        self._changes += 1
        done = asyncio.get_running_loop().create_future()
        self._waiters.append((self._changes, done))
        if self._writer is None or self._writer.done():
            self._writer = spawn(self._write_changes(), "local-metadata-store-writer")
        await done

    async def _write_changes(self) -> None:
        loop = asyncio.get_running_loop()
        while self._written < self._changes:
            upto = self._changes
            # the snapshot is taken on the loop; values are immutable tuples
            nodes, ephemeral = dict(self.nodes), frozenset(self.ephemeral)
            try:
                await loop.run_in_executor(None, _write_tree, self.path, nodes, ephemeral)
            except Exception as e:
                self._settle(upto, e)  # the callers see the error, as a failed write
                if self._changes == upto:
                    return
                continue  # changes made meanwhile wait for a write of their own
            self._written = upto
            self._settle(upto, None)

    def _settle(self, upto: int, error: Exception | None) -> None:
        waiting = []
        for change, done in self._waiters:
            if change > upto:
                waiting.append((change, done))
            elif not done.done():
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)
        self._waiters = waiting

    def _fire(self, path: str, children_changed_of: str | None) -> None:
        loop = asyncio.get_running_loop()
        for cb in self._data_watches.get(path, ()):
            loop.call_soon(cb, path)
        if children_changed_of is not None:
            for cb in self._child_watches.get(children_changed_of, ()):
                loop.call_soon(cb, children_changed_of)

    async def get(self, path: str) -> tuple[bytes, int] | None:
        return self.nodes.get(path)

    async def get_children(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):] for p in self.nodes
                       if p.startswith(prefix) and p != prefix and "/" not in p[len(prefix):]})

    def _check_fence(self, fence: store.Fence | None) -> None:
        if fence is not None:
            node = self.nodes.get(fence[0])
            if node is None or node[1] != fence[1]:
                raise store.FencedError(f"{fence[0]} is not at version {fence[1]}")

    async def create(self, path: str, data: bytes = b"", ephemeral: bool = False,
                     make_parents: bool = True, fence: store.Fence | None = None) -> None:
        self._check_fence(fence)
        if path in self.nodes:
            raise store.NodeExistsError(path)
        parent = _parent(path)
        missing = []
        while parent not in self.nodes:
            if not make_parents:
                raise store.NoNodeError(parent)
            missing.append(parent)
            parent = _parent(parent)
        for p in reversed(missing):
            self.nodes[p] = (b"", 0)
        self.nodes[path] = (data, 0)
        if ephemeral:
            self.ephemeral.add(path)
        else:
            await self._persist()
        self._fire(path, _parent(path))

    async def set(self, path: str, data: bytes, version: int = -1,
                  fence: store.Fence | None = None) -> int:
        self._check_fence(fence)
        node = self.nodes.get(path)
        if node is None:
            raise store.NoNodeError(path)
        if version != -1 and node[1] != version:
            raise store.BadVersionError(f"{path}: version {node[1]}, expected {version}")
        self.nodes[path] = (data, node[1] + 1)
        if path not in self.ephemeral:
            await self._persist()
        self._fire(path, None)
        return node[1] + 1

    async def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        node = self.nodes.get(path)
        if node is None:
            raise store.NoNodeError(path)
        if version != -1 and node[1] != version:
            raise store.BadVersionError(path)
        prefix = path + "/"
        children = [p for p in self.nodes if p.startswith(prefix)]
        if children and not recursive:
            raise store.StoreNotEmpty(path)
        for p in children + [path]:
            self.nodes.pop(p, None)
            self.ephemeral.discard(p)
        await self._persist()
        for p in children:
            self._fire(p, _parent(p))
        self._fire(path, _parent(path))

    def watch_children(self, path: str, callback: store.WatchCallback) -> None:
        self._child_watches[path].append(callback)

    def watch_data(self, path: str, callback: store.WatchCallback) -> None:
        self._data_watches[path].append(callback)


def _write_tree(path: str, nodes: dict[str, tuple[bytes, int]],
                ephemeral: frozenset[str]) -> None:
    """Blocking (in the executor): serialize a snapshot of the tree and write it."""
    stored = {p: (base64.b64encode(d).decode(), v) for p, (d, v) in nodes.items()
              if p not in ephemeral}
    write_atomically(path, json.dumps({"version": 1, "nodes": stored}, indent=0))
