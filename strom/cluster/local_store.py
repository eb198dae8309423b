"""The `local` MetadataStore: one broker, metadata in a JSON file in its first log dir.

The whole tree is kept in memory and written atomically (temp file, fsync, rename) after
every change, so a crash leaves either the old or the new tree. Ephemeral nodes live only
in memory, as a ZooKeeper session's would. Watches fire on the event loop after a change.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections import defaultdict

from strom.cluster.store import (
    BadVersionError,
    Fence,
    FencedError,
    MetadataStore,
    NodeExistsError,
    NoNodeError,
    WatchCallback,
)
from strom.log.checkpoint import write_atomically

log = logging.getLogger(__name__)

FILE_NAME = "strom-metadata.json"


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


class LocalMetadataStore(MetadataStore):
    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, FILE_NAME)
        self.nodes: dict[str, tuple[bytes, int]] = {"/": (b"", 0)}
        self.ephemeral: set[str] = set()
        self._child_watches: dict[str, list[WatchCallback]] = defaultdict(list)
        self._data_watches: dict[str, list[WatchCallback]] = defaultdict(list)

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
        for path in list(self.ephemeral):
            self.nodes.pop(path, None)
        self.ephemeral.clear()

    def _persist(self) -> None:
        nodes = {p: (base64.b64encode(d).decode(), v) for p, (d, v) in self.nodes.items()
                 if p not in self.ephemeral}
        write_atomically(self.path, json.dumps({"version": 1, "nodes": nodes}, indent=0))

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

    def _check_fence(self, fence: Fence | None) -> None:
        if fence is not None:
            node = self.nodes.get(fence[0])
            if node is None or node[1] != fence[1]:
                raise FencedError(f"{fence[0]} is not at version {fence[1]}")

    async def create(self, path: str, data: bytes = b"", ephemeral: bool = False,
                     make_parents: bool = True, fence: Fence | None = None) -> None:
        self._check_fence(fence)
        if path in self.nodes:
            raise NodeExistsError(path)
        parent = _parent(path)
        missing = []
        while parent not in self.nodes:
            if not make_parents:
                raise NoNodeError(parent)
            missing.append(parent)
            parent = _parent(parent)
        for p in reversed(missing):
            self.nodes[p] = (b"", 0)
        self.nodes[path] = (data, 0)
        if ephemeral:
            self.ephemeral.add(path)
        else:
            self._persist()
        self._fire(path, _parent(path))

    async def set(self, path: str, data: bytes, version: int = -1,
                  fence: Fence | None = None) -> int:
        self._check_fence(fence)
        node = self.nodes.get(path)
        if node is None:
            raise NoNodeError(path)
        if version != -1 and node[1] != version:
            raise BadVersionError(f"{path}: version {node[1]}, expected {version}")
        self.nodes[path] = (data, node[1] + 1)
        if path not in self.ephemeral:
            self._persist()
        self._fire(path, None)
        return node[1] + 1

    async def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        node = self.nodes.get(path)
        if node is None:
            raise NoNodeError(path)
        if version != -1 and node[1] != version:
            raise BadVersionError(path)
        prefix = path + "/"
        children = [p for p in self.nodes if p.startswith(prefix)]
        if children and not recursive:
            raise StoreNotEmpty(path)
        for p in children + [path]:
            self.nodes.pop(p, None)
            self.ephemeral.discard(p)
        self._persist()
        for p in children:
            self._fire(p, _parent(p))
        self._fire(path, _parent(path))

    def watch_children(self, path: str, callback: WatchCallback) -> None:
        self._child_watches[path].append(callback)

    def watch_data(self, path: str, callback: WatchCallback) -> None:
        self._data_watches[path].append(callback)


class StoreNotEmpty(NodeExistsError):
    pass
