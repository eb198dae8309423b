"""MetadataStore: the one interface cluster metadata is read and written through.

Two backends give the same semantics: `LocalMetadataStore` (a single broker, files in its
first log dir) and a ZooKeeper store (kazoo, Kafka's znode layout). Methods are grouped by
the guarantee they give, as in Patroni's DCS:

  read          get, get_children, exists
  create        create (fails with NodeExistsError if present), optionally ephemeral
  compare-and-set  set(path, data, version) (BadVersionError if the version moved), delete
  watch         watch_data / watch_children: the callback runs on the event loop after a
                change (at least once per change; re-read state in it)

Paths and payloads follow cluster/model.py.
"""

from __future__ import annotations

import abc
from collections.abc import Callable


class StoreError(Exception):
    pass


class NodeExistsError(StoreError):
    pass


class NoNodeError(StoreError):
    pass


class StoreNotEmpty(NodeExistsError):
    """A non-recursive delete of a node that has children."""


class BadVersionError(StoreError):
    pass


class FencedError(StoreError):
    """A fenced write was refused: the fence node is no longer at the expected version
    (a controller that lost its epoch, say)."""


# (path, version): a write with a fence happens only if that node is at that version,
# checked atomically with the write (a ZooKeeper multi with a check op).
Fence = tuple[str, int]


WatchCallback = Callable[[str], None]
# "expired": the session ended and this broker's ephemeral nodes are gone;
# "reconnected": a new session is up (re-create ephemeral nodes, re-run elections).
SessionCallback = Callable[[str], None]


class MetadataStore(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # read
    @abc.abstractmethod
    async def get(self, path: str) -> tuple[bytes, int] | None:
        """(data, version), or None if the node does not exist."""

    @abc.abstractmethod
    async def get_children(self, path: str) -> list[str]:
        """Child names (not paths); empty if the node does not exist."""

    async def exists(self, path: str) -> bool:
        return await self.get(path) is not None

    # create
    @abc.abstractmethod
    async def create(self, path: str, data: bytes = b"", ephemeral: bool = False,
                     make_parents: bool = True, fence: Fence | None = None) -> None:
        """Create a node; NodeExistsError if it exists, FencedError if `fence` fails."""

    # compare-and-set
    @abc.abstractmethod
    async def set(self, path: str, data: bytes, version: int = -1,
                  fence: Fence | None = None) -> int:
        """Write if the node's version is `version` (-1: any); returns the new version.
        BadVersionError if the version moved, FencedError if `fence` fails."""

    @abc.abstractmethod
    async def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        """Delete a node (and its children when recursive); NoNodeError if absent."""

    # watch
    @abc.abstractmethod
    def watch_children(self, path: str, callback: WatchCallback) -> None: ...

    @abc.abstractmethod
    def watch_data(self, path: str, callback: WatchCallback) -> None: ...

    def on_session(self, callback: SessionCallback) -> None:
        """Register for session events (the local store has none)."""
        del callback
