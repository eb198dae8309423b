"""The `zookeeper` MetadataStore: kazoo against a ZooKeeper ensemble, Kafka's znode layout.

`connect` is Kafka's `zookeeper.connect`, "host:port[,host:port...][/chroot]". As Kafka
does, `start()` first connects without the chroot to create it when missing, then opens
the session everything else uses (rooted at the chroot).

Threads: kazoo runs its own connection and callback threads. Every operation here uses a
kazoo *_async call whose result is handed back to the event loop with
`call_soon_threadsafe`, so nothing blocks the loop; only start() and close(), which wait
for kazoo's threads, run in the loop's default executor.

Errors: kazoo's NodeExists/NoNode/BadVersion/NotEmpty become the store's NodeExistsError,
NoNodeError, BadVersionError and StoreNotEmpty; everything else (connection loss, session
expired, closed client) is a plain StoreError. kazoo holds requests made while it is
reconnecting; one that has no answer within `connection_timeout_ms` (Kafka's
zookeeper.connection.timeout.ms, default: the session timeout) fails with StoreError, and
like a ZooKeeper ConnectionLoss the outcome of such a write is unknown. A read that was in
flight when the connection dropped (ConnectionLoss) is sent again once kazoo reconnects,
as Kafka's client retries until connected; a write is not.

Fenced writes are one ZooKeeper multi: `check(fence path, fence version)` followed by the
write (and, for a fenced create with make_parents, the creates of the missing parents),
so a writer that lost its fence changes nothing at all.

Watches: ZooKeeper watches are one-shot and kazoo drops them all when the connection goes
(it does not re-send them on reconnection). Each watched path therefore has a `_Watch`
that re-arms itself after every event and is re-armed by the store after every
reconnection, when all callbacks also fire once (changes may have been missed while the
watch was gone). A data watch is an `exists` watch, which ZooKeeper fires on creation,
change and deletion alike; a children watch is a `get_children` watch, falling back to an
`exists` watch while the node is missing, so it survives the node's deletion and
re-creation.

Sessions: when the session expires (kazoo's LOST: this broker's ephemeral nodes are gone),
session callbacks get "expired"; when kazoo has a new session, they get "reconnected",
after the watches are re-armed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError as KzBadVersionError
from kazoo.exceptions import ConnectionLoss, RolledBackError, RuntimeInconsistency
from kazoo.exceptions import NodeExistsError as KzNodeExistsError
from kazoo.exceptions import NoNodeError as KzNoNodeError
from kazoo.exceptions import NotEmptyError as KzNotEmptyError
from kazoo.protocol.states import EventType, WatchedEvent
from kazoo.retry import KazooRetry

from strom.cluster.store import (
    BadVersionError,
    Fence,
    FencedError,
    MetadataStore,
    NodeExistsError,
    NoNodeError,
    SessionCallback,
    StoreError,
    StoreNotEmpty,
    WatchCallback,
)

log = logging.getLogger(__name__)

# Ops of a failed multi other than the one that failed come back as one of these.
_TX_NOT_THE_CAUSE = (RolledBackError, RuntimeInconsistency)
_PARENT_RETRIES = 10


def parse_connect(connect: str) -> tuple[str, str]:
    """Split Kafka's `zookeeper.connect` into (hosts, chroot); chroot is "" when absent."""
    connect = connect.strip()
    hosts, slash, chroot = connect.partition("/")
    if not hosts or not all(h.strip() for h in hosts.split(",")):
        raise ValueError(f"invalid zookeeper.connect {connect!r}: expected "
                         "host:port[,host:port...][/chroot]")
    chroot = ("/" + chroot).rstrip("/") if slash else ""
    return hosts, chroot


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _join(path: str, child: str) -> str:
    return path.rstrip("/") + "/" + child


def _translate(exc: BaseException, op: str, path: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, KzNodeExistsError):
        return NodeExistsError(path)
    if isinstance(exc, KzNoNodeError):
        return NoNodeError(path)
    if isinstance(exc, KzBadVersionError):
        return BadVersionError(path)
    if isinstance(exc, KzNotEmptyError):
        return StoreNotEmpty(path)
    # ConnectionLoss, SessionExpiredError, ConnectionClosedError, OperationTimeoutError, ...
    return StoreError(f"zookeeper {op} {path}: {type(exc).__name__}: {exc}".rstrip(": "))


class ZkMetadataStore(MetadataStore):
    def __init__(self, connect: str, session_timeout_ms: int = 18000,
                 connection_timeout_ms: int | None = None) -> None:
        self.connect = connect
        self.hosts, self.chroot = parse_connect(connect)
        self.session_timeout_ms = session_timeout_ms
        self.connection_timeout_ms = connection_timeout_ms or session_timeout_ms
        self._client: KazooClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._data_watches: dict[str, _Watch] = {}
        self._child_watches: dict[str, _Watch] = {}
        self._session_callbacks: list[SessionCallback] = []
        # touched only by kazoo's connection thread (in the state listener)
        self._ever_connected = False
        self._session_lost = False

    # -- lifecycle -------------------------------------------------------------------------

    def _new_client(self, hosts: str) -> KazooClient:
        return KazooClient(
            hosts=hosts,
            timeout=self.session_timeout_ms / 1000.0,
            # reconnect forever, but never wait more than a second between attempts (kazoo's
            # default backs off to an hour)
            connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=1.0),
        )

    def _start_client(self, client: KazooClient) -> None:
        timeout = self.connection_timeout_ms / 1000.0
        try:
            client.start(timeout=timeout)
        except Exception as exc:
            try:
                client.stop()
                client.close()
            except Exception:  # already failing; report the first error
                pass
            raise StoreError(
                f"could not connect to ZooKeeper at {self.connect!r} within "
                f"{self.connection_timeout_ms} ms ({type(exc).__name__}: {exc})") from exc

    def _connect_blocking(self) -> None:
        if self.chroot:
            boot = self._new_client(self.hosts)
            self._start_client(boot)
            try:
                boot.ensure_path(self.chroot)
            except Exception as exc:
                raise StoreError(f"could not create the chroot {self.chroot!r} in ZooKeeper "
                                 f"at {self.connect!r}: {exc!r}") from exc
            finally:
                boot.stop()
                boot.close()
        client = self._new_client(self.hosts + self.chroot)
        client.add_listener(self._on_state)
        self._client = client  # before start: the CONNECTED event re-arms watches through it
        try:
            self._start_client(client)
        except BaseException:
            self._client = None
            raise

    async def start(self) -> None:
        if self._client is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._ever_connected = False
        self._session_lost = False
        await self._loop.run_in_executor(None, self._connect_blocking)

    async def close(self) -> None:
        """End the session: its ephemeral nodes go at once. Watches stop firing."""
        self._closing = True
        client, self._client = self._client, None
        if client is None:
            return

        def stop() -> None:
            try:
                client.stop()
            finally:
                client.close()

        await asyncio.get_running_loop().run_in_executor(None, stop)

    @property
    def connected(self) -> bool:
        client = self._client
        return client is not None and client.connected

    @property
    def session_id(self) -> int | None:
        """The id of this client's ZooKeeper session (None while it has none)."""
        client = self._client
        if client is None or not client.connected or not client.client_id:
            return None
        return client.client_id[0]

    # -- plumbing --------------------------------------------------------------------------

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on the event loop (from any thread)."""
        loop = self._loop
        if loop is None or self._closing:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed
            pass

    def _require_client(self) -> KazooClient:
        client = self._client
        if client is None:
            raise StoreError(f"ZooKeeper store {self.connect!r} is not started (or closed)")
        return client

    async def _call(self, op: str, path: str, begin: Callable[[KazooClient], Any],
                    read: bool = False) -> Any:
        """Start a kazoo async call and await its result on the loop; kazoo errors come out
        as the store's. A read that fails with ConnectionLoss (it was in flight when the
        connection to a ZooKeeper member dropped) is sent again once kazoo has reconnected,
        as Kafka's ZooKeeper client retries requests until connected, within
        `connection_timeout_ms` in all; a write is not (its outcome is unknown)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connection_timeout_ms / 1000.0
        while True:
            try:
                return await self._call_once(op, path, begin, deadline)
            except StoreError as exc:
                if not (read and isinstance(exc.__cause__, ConnectionLoss)):
                    raise
                if loop.time() >= deadline or self._closing:
                    raise
                log.info("Retrying zookeeper %s %s after a connection loss", op, path)
                await asyncio.sleep(0.05)  # kazoo holds the retry until it has reconnected

    async def _call_once(self, op: str, path: str, begin: Callable[[KazooClient], Any],
                         deadline: float) -> Any:
        client = self._require_client()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        def done(result: Any) -> None:  # kazoo's callback thread
            ok = result.successful()
            value = result.value if ok else result.exception
            try:
                loop.call_soon_threadsafe(settle, ok, value)
            except RuntimeError:  # the loop is closed
                pass

        try:
            begin(client).rawlink(done)
            return await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
        except (StoreError, asyncio.CancelledError):
            raise
        except TimeoutError:
            # kazoo queues requests while it reconnects; give up as Kafka's client does
            # after zookeeper.connection.timeout.ms (the outcome of a write is unknown)
            raise StoreError(
                f"zookeeper {op} {path}: no answer within {self.connection_timeout_ms} ms "
                f"(connected to {self.connect!r}: {client.connected})") from None
        except Exception as exc:
            raise _translate(exc, op, path) from exc

    async def _commit(self, op: str, path: str, build: Callable[[Any], None],
                      fence: Fence) -> list[Any]:
        """Commit a multi whose first op is the fence check; returns the results, or raises
        FencedError (the check failed) or (index of the failed op, kazoo exception)."""
        def begin(client: KazooClient) -> Any:
            tx = client.transaction()
            tx.check(fence[0], fence[1])
            build(tx)
            return tx.commit_async()

        results = await self._call(op, path, begin)
        for i, r in enumerate(results):
            if isinstance(r, Exception) and not isinstance(r, _TX_NOT_THE_CAUSE):
                if i == 0:
                    raise FencedError(f"{fence[0]} is not at version {fence[1]} "
                                      f"({type(r).__name__})")
                raise _TxFailed(i, r)
        if any(isinstance(r, Exception) for r in results):  # should not happen
            raise StoreError(f"zookeeper {op} {path}: multi failed: {results!r}")
        return results

    # -- read ------------------------------------------------------------------------------

    async def get(self, path: str) -> tuple[bytes, int] | None:
        try:
            data, stat = await self._call("get", path, lambda c: c.get_async(path),
                                          read=True)
        except NoNodeError:
            return None
        return (data or b"", stat.version)

    async def ephemeral_owner(self, path: str) -> tuple[int, int] | None:
        """(the session id owning the node at `path`, 0 if it is persistent; its version),
        or None if there is no such node."""
        try:
            _data, stat = await self._call("get", path, lambda c: c.get_async(path),
                                          read=True)
        except NoNodeError:
            return None
        return stat.ephemeralOwner, stat.version

    async def get_children(self, path: str) -> list[str]:
        try:
            children = await self._call("get_children", path,
                                        lambda c: c.get_children_async(path), read=True)
        except NoNodeError:
            return []
        return sorted(children)

    async def exists(self, path: str) -> bool:
        return await self._call("exists", path, lambda c: c.exists_async(path),
                                read=True) is not None

    # -- create ----------------------------------------------------------------------------

    async def create(self, path: str, data: bytes = b"", ephemeral: bool = False,
                     make_parents: bool = True, fence: Fence | None = None) -> None:
        if fence is None:
            await self._call("create", path, lambda c: c.create_async(
                path, data, ephemeral=ephemeral, makepath=make_parents))
            return
        # Fenced: the missing parents are created in the same multi as the node, so a writer
        # that lost its fence leaves no trace. A parent created or deleted meanwhile by
        # someone else fails the multi; look again and retry.
        for _ in range(_PARENT_RETRIES):
            missing: list[str] = []
            if make_parents:
                parent = _parent(path)
                while parent != "/" and not await self.exists(parent):
                    missing.append(parent)
                    parent = _parent(parent)
            missing.reverse()

            def build(tx: Any, missing: list[str] = missing) -> None:
                for p in missing:
                    tx.create(p, b"")
                tx.create(path, data, ephemeral=ephemeral)

            try:
                await self._commit("create", path, build, fence)
                return
            except _TxFailed as failed:
                node_failed = failed.index == len(missing) + 1
                parent_gone = make_parents and isinstance(failed.error, KzNoNodeError)
                if node_failed and not parent_gone:
                    raise _translate(failed.error, "create", path) from None
        raise StoreError(f"zookeeper create {path}: its parents kept changing")

    # -- compare-and-set -------------------------------------------------------------------

    async def set(self, path: str, data: bytes, version: int = -1,
                  fence: Fence | None = None) -> int:
        if fence is None:
            stat = await self._call("set", path, lambda c: c.set_async(path, data, version))
            return stat.version

        def build(tx: Any) -> None:
            tx.set_data(path, data, version)

        try:
            results = await self._commit("set", path, build, fence)
        except _TxFailed as failed:
            raise _translate(failed.error, "set", path) from None
        return results[1].version

    async def delete(self, path: str, version: int = -1, recursive: bool = False) -> None:
        """A recursive delete checks `version` first, then deletes the subtree bottom-up
        (not atomically, as Kafka's deleteRecursive) and the node last, with `version`."""
        if not recursive:
            await self._call("delete", path, lambda c: c.delete_async(path, version))
            return
        stat = await self._call("exists", path, lambda c: c.exists_async(path))
        if stat is None:
            raise NoNodeError(path)
        if version != -1 and stat.version != version:
            raise BadVersionError(f"{path}: version {stat.version}, expected {version}")
        for _ in range(_PARENT_RETRIES):
            await self._delete_children(path)
            try:
                await self._call("delete", path, lambda c: c.delete_async(path, version))
                return
            except StoreNotEmpty:  # a child appeared meanwhile
                continue
        raise StoreError(f"zookeeper delete {path}: children kept appearing")

    async def _delete_children(self, path: str) -> None:
        children = await self.get_children(path)
        await asyncio.gather(*(self._delete_tree(_join(path, c)) for c in children))

    async def _delete_tree(self, path: str) -> None:
        for _ in range(_PARENT_RETRIES):
            await self._delete_children(path)
            try:
                await self._call("delete", path, lambda c: c.delete_async(path))
                return
            except NoNodeError:
                return
            except StoreNotEmpty:
                continue
        raise StoreError(f"zookeeper delete {path}: children kept appearing")

    # -- watch -----------------------------------------------------------------------------

    def watch_data(self, path: str, callback: WatchCallback) -> None:
        self._watch(self._data_watches, path, callback, children=False)

    def watch_children(self, path: str, callback: WatchCallback) -> None:
        self._watch(self._child_watches, path, callback, children=True)

    def _watch(self, table: dict[str, _Watch], path: str, callback: WatchCallback,
               children: bool) -> None:
        watch = table.get(path)
        if watch is None:
            watch = table[path] = _Watch(self, path, children)
            watch.callbacks.append(callback)
            watch.arm()  # a no-op before start(); armed on connection then
        else:
            watch.callbacks.append(callback)

    def on_session(self, callback: SessionCallback) -> None:
        self._session_callbacks.append(callback)

    # -- session ---------------------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        """kazoo's state listener (its connection thread; must not block)."""
        if self._closing:
            return
        if state == KazooState.LOST:
            if not self._ever_connected:
                return  # start() failed: it raises; there was no session to lose
            self._session_lost = True
            log.warning("ZooKeeper session expired (%s)", self.connect)
            self._post(self._session_event, "expired")
        elif state == KazooState.CONNECTED:
            first = not self._ever_connected
            self._ever_connected = True
            new_session = self._session_lost
            self._session_lost = False
            if new_session:
                log.warning("ZooKeeper: new session established (%s)", self.connect)
            self._post(self._on_connected, first, new_session)
        else:  # SUSPENDED: the same session may come back; kazoo keeps trying
            log.info("ZooKeeper connection suspended (%s)", self.connect)

    def _on_connected(self, first: bool, new_session: bool) -> None:
        watches = list(self._data_watches.values()) + list(self._child_watches.values())
        for w in watches:
            w.arm()
        if new_session:
            self._session_event("reconnected")
        if not first:
            # kazoo dropped every watch with the connection: changes may have gone unseen
            for w in watches:
                w.fire()

    def _session_event(self, event: str) -> None:
        if self._closing:
            return
        for cb in list(self._session_callbacks):
            try:
                cb(event)
            except Exception:
                log.exception("session callback %r failed on %r", cb, event)


class _TxFailed(Exception):
    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


class _Watch:
    """One watched path (data or children) and its callbacks; see the module docstring.

    arm() may run on the loop or on kazoo's callback thread; kazoo keeps watchers in sets,
    so arming twice registers one watcher (the bound method compares equal)."""

    def __init__(self, store: ZkMetadataStore, path: str, children: bool) -> None:
        self.store = store
        self.path = path
        self.children = children
        self.callbacks: list[WatchCallback] = []

    def arm(self) -> None:
        client = self.store._client
        if client is None or self.store._closing:
            return
        try:
            if self.children:
                client.get_children_async(self.path, watch=self._on_event).rawlink(
                    self._children_armed)
            else:
                client.exists_async(self.path, watch=self._on_event)
        except Exception as exc:  # closed meanwhile; re-armed on the next connection
            log.debug("could not arm watch on %s: %r", self.path, exc)

    def _children_armed(self, result: Any) -> None:
        if result.successful() or not isinstance(result.exception, KzNoNodeError):
            return  # armed, or the connection went (re-armed on reconnection)
        client = self.store._client
        if client is None or self.store._closing:
            return
        # No node, so no children watch: watch for its creation instead.
        try:
            client.exists_async(self.path, watch=self._on_event).rawlink(self._exists_armed)
        except Exception as exc:
            log.debug("could not arm watch on %s: %r", self.path, exc)

    def _exists_armed(self, result: Any) -> None:
        if result.successful() and result.value is not None:
            # created between the two calls: watch its children now, and tell the callbacks
            self.arm()
            self.fire()

    def _on_event(self, event: WatchedEvent) -> None:
        if event.type == EventType.NONE:
            return  # kazoo dropping its watches on disconnection; re-armed on reconnection
        self.arm()  # before firing: a read in the callback then sees any later change
        self.fire()

    def fire(self) -> None:
        for cb in list(self.callbacks):
            self.store._post(cb, self.path)
