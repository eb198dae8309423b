"""MetadataStore contract: the same cases against both backends.

`local` is LocalMetadataStore in tmp_path; `zookeeper` is ZkMetadataStore against the
session's real ZooKeeper, each test in its own chroot. Session behaviour (expiry, the
chroot, connection errors) is ZooKeeper-only and at the end.

Each test runs its own event loop with `asyncio.run` under an overall `asyncio.wait_for`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest
from kazoo.client import KazooClient

from strom.cluster.local_store import LocalMetadataStore
from strom.cluster.store import (
    BadVersionError,
    FencedError,
    MetadataStore,
    NodeExistsError,
    NoNodeError,
    StoreError,
)
from strom.cluster.zk_store import ZkMetadataStore, parse_connect
from strom.testing.broker import free_port
from strom.testing.zookeeper import TcpProxy

pytestmark = pytest.mark.timeout(30)


def run(coro, timeout: float = 25.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Backend:
    """Makes stores of one kind that share one namespace (a dir, or a chroot)."""

    def __init__(self, kind: str, tmp_path, zk=None) -> None:
        self.kind = kind
        self.dir = str(tmp_path / "meta")
        self.chroot = f"/strom-test-{uuid.uuid4().hex[:12]}"
        self.zk = zk

    @property
    def is_zk(self) -> bool:
        return self.kind == "zookeeper"

    def new(self, **kwargs) -> MetadataStore:
        if self.is_zk:
            return ZkMetadataStore(self.zk.connect_string + self.chroot, **kwargs)
        return LocalMetadataStore(self.dir)

    @contextlib.asynccontextmanager
    async def store(self, **kwargs):
        s = self.new(**kwargs)
        await s.start()
        try:
            yield s
        finally:
            await s.close()

    async def settle(self) -> None:
        """Let late duplicate watch events arrive (ZooKeeper may send several per change)."""
        await asyncio.sleep(0.2 if self.is_zk else 0)


@pytest.fixture(params=["local", "zookeeper"])
def backend(request, tmp_path) -> Backend:
    zk = request.getfixturevalue("zookeeper") if request.param == "zookeeper" else None
    return Backend(request.param, tmp_path, zk)


@pytest.fixture
def zk_backend(zookeeper, tmp_path) -> Backend:
    return Backend("zookeeper", tmp_path, zookeeper)


class Recorder:
    """A watch or session callback that remembers its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._event = asyncio.Event()

    def __call__(self, arg: str) -> None:
        self.calls.append(arg)
        self._event.set()

    def reset(self) -> None:
        self.calls.clear()
        self._event.clear()

    async def wait(self, timeout: float = 5.0) -> None:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"callback not called within {timeout}s") from None

    async def wait_for(self, value: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while value not in self.calls:
            self._event.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{value!r} not seen within {timeout}s: {self.calls}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), left)


async def fires(backend: Backend, rec: Recorder, action) -> None:
    """`action` (a coroutine) makes the watch behind `rec` fire."""
    await backend.settle()
    rec.reset()
    await action
    await rec.wait(5.0 if backend.is_zk else 1.0)  # local watches fire on the next loop turn


async def eventually(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)


# -- read and create -------------------------------------------------------------------------

def test_create_get_exists_children(backend):
    async def main():
        async with backend.store() as s:
            assert await s.get("/brokers/ids/1") is None
            assert not await s.exists("/brokers/ids/1")
            assert await s.get_children("/brokers/ids") == []
            await s.create("/brokers/ids/1", b'{"id":1}')
            await s.create("/brokers/ids/2", b"")
            assert await s.get("/brokers/ids/1") == (b'{"id":1}', 0)
            assert await s.get("/brokers/ids/2") == (b"", 0)
            assert await s.exists("/brokers/ids/1")
            assert await s.get_children("/brokers/ids") == ["1", "2"]
            assert await s.get_children("/brokers") == ["ids"]
            assert await s.get_children("/brokers/ids/1") == []
    run(main())


def test_make_parents(backend):
    async def main():
        async with backend.store() as s:
            await s.create("/a/b/c", b"leaf")
            assert await s.get("/a") == (b"", 0)
            assert await s.get("/a/b") == (b"", 0)
            assert await s.get("/a/b/c") == (b"leaf", 0)
            with pytest.raises(NoNodeError):
                await s.create("/x/y", b"", make_parents=False)
            assert not await s.exists("/x")
            await s.create("/a/b/d", b"", make_parents=False)  # parent exists
            assert await s.get_children("/a/b") == ["c", "d"]
    run(main())


def test_create_existing_raises(backend):
    async def main():
        async with backend.store() as s:
            await s.create("/n", b"1")
            with pytest.raises(NodeExistsError):
                await s.create("/n", b"2")
            assert await s.get("/n") == (b"1", 0)
    run(main())


def test_data_survives_a_new_store(backend):
    async def main():
        async with backend.store() as s:
            await s.create("/config/topics/t", b'{"version":1}')
            await s.set("/config/topics/t", b'{"version":2}')
        async with backend.store() as s:
            assert await s.get("/config/topics/t") == (b'{"version":2}', 1)
    run(main())


# -- compare-and-set ---------------------------------------------------------------------------

def test_set_compare_and_set(backend):
    async def main():
        async with backend.store() as s:
            await s.create("/p", b"v0")
            assert await s.set("/p", b"v1", version=0) == 1
            with pytest.raises(BadVersionError):
                await s.set("/p", b"stale", version=0)
            assert await s.get("/p") == (b"v1", 1)
            assert await s.set("/p", b"v2") == 2  # -1: any version
            assert await s.set("/p", b"v3", version=2) == 3
            assert await s.get("/p") == (b"v3", 3)
            with pytest.raises(NoNodeError):
                await s.set("/missing", b"x")
    run(main())


def test_fenced_set(backend):
    async def main():
        async with backend.store() as s:
            await s.create("/controller_epoch", b"1")
            await s.create("/state", b"a")
            fence = ("/controller_epoch", 0)
            assert await s.set("/state", b"b", version=0, fence=fence) == 1
            with pytest.raises(BadVersionError):  # the fence holds, the version does not
                await s.set("/state", b"c", version=0, fence=fence)
            with pytest.raises(NoNodeError):
                await s.set("/missing", b"c", fence=fence)
            await s.set("/controller_epoch", b"2")  # another controller took over
            with pytest.raises(FencedError):
                await s.set("/state", b"zombie", version=1, fence=fence)
            with pytest.raises(FencedError):
                await s.set("/state", b"zombie", fence=("/no-such-fence", 0))
            assert await s.get("/state") == (b"b", 1)
            assert await s.set("/state", b"c", version=1, fence=("/controller_epoch", 1)) == 2
    run(main())


def test_fenced_create(backend):
    async def main():
        async with backend.store() as s:
            await s.create("/controller_epoch", b"1")
            fence = ("/controller_epoch", 0)
            await s.create("/brokers/topics/t/partitions/0/state", b"s", fence=fence)
            assert await s.get("/brokers/topics/t/partitions/0/state") == (b"s", 0)
            assert await s.get("/brokers/topics/t") == (b"", 0)
            with pytest.raises(NodeExistsError):
                await s.create("/brokers/topics/t/partitions/0/state", b"again", fence=fence)
            with pytest.raises(NoNodeError):
                await s.create("/nope/x", b"", make_parents=False, fence=fence)
            await s.set("/controller_epoch", b"2")
            with pytest.raises(FencedError):
                await s.create("/brokers/topics/u/partitions/0/state", b"zombie", fence=fence)
            # a refused write leaves nothing behind, not even the parents
            assert not await s.exists("/brokers/topics/u")
            assert await s.get_children("/brokers/topics") == ["t"]
            await s.create("/eph", b"", ephemeral=True, fence=("/controller_epoch", 1))
            assert await s.exists("/eph")
    run(main())


def test_delete(backend):
    async def main():
        async with backend.store() as s:
            await s.create("/d/leaf", b"")
            await s.delete("/d/leaf")
            assert not await s.exists("/d/leaf")
            with pytest.raises(NoNodeError):
                await s.delete("/d/leaf")
            with pytest.raises(NoNodeError):
                await s.delete("/d/leaf", recursive=True)
            await s.create("/t/partitions/0/state", b"x")
            await s.create("/t/partitions/1/state", b"y")
            with pytest.raises(NodeExistsError):  # not empty
                await s.delete("/t")
            assert await s.exists("/t/partitions/0/state")
            await s.set("/t", b"topic")
            with pytest.raises(BadVersionError):
                await s.delete("/t", version=0, recursive=True)
            assert await s.exists("/t/partitions/1/state")
            await s.delete("/t", version=1, recursive=True)
            for p in ("/t", "/t/partitions", "/t/partitions/0", "/t/partitions/1/state"):
                assert not await s.exists(p), p
            assert await s.get_children("/d") == []
            assert not await s.exists("/t")
            await s.create("/v", b"")
            with pytest.raises(BadVersionError):
                await s.delete("/v", version=3)
            await s.delete("/v", version=0)
    run(main())


def test_children_of_root(backend):
    async def main():
        async with backend.store() as s:
            await s.create("/a/b", b"")
            await s.create("/c", b"")
            assert await s.get_children("/") == ["a", "c"]
            assert await s.get_children("/a") == ["b"]
    run(main())


def test_ephemeral_nodes_go_with_the_session(backend):
    async def main():
        s = backend.new()
        other = backend.new() if backend.is_zk else None
        await s.start()
        try:
            if other is not None:
                await other.start()
            await s.create("/brokers/ids/1", b"eph", ephemeral=True)
            await s.create("/brokers/ids/p", b"persistent")
            assert await s.get("/brokers/ids/1") == (b"eph", 0)
            assert await s.get_children("/brokers/ids") == ["1", "p"]
            if other is not None:  # another session sees it while this one lives
                assert await other.get("/brokers/ids/1") == (b"eph", 0)
            await s.close()
            if other is not None:  # and not once it has ended
                assert not await other.exists("/brokers/ids/1")
                assert await other.get_children("/brokers/ids") == ["p"]
        finally:
            await s.close()
            if other is not None:
                await other.close()
        async with backend.store() as s2:
            assert not await s2.exists("/brokers/ids/1")
            assert await s2.get("/brokers/ids/p") == (b"persistent", 0)
            assert await s2.get_children("/brokers/ids") == ["p"]
    run(main())


# -- watch -------------------------------------------------------------------------------------

def test_watch_data(backend):
    async def main():
        async with backend.store() as s:
            rec = Recorder()
            s.watch_data("/w/node", rec)  # registered before the node exists
            await backend.settle()
            assert rec.calls == []
            await fires(backend, rec, s.create("/w/node", b"v0"))  # created
            assert rec.calls[0] == "/w/node"
            for i in range(1, 4):  # every change, not only the first (watches re-arm)
                await fires(backend, rec, s.set("/w/node", f"v{i}".encode()))
            assert await s.get("/w/node") == (b"v3", 3)
            await fires(backend, rec, s.delete("/w/node"))
            await fires(backend, rec, s.create("/w/node", b"again"))  # re-created
            await fires(backend, rec, s.set("/w/node", b"more"))
    run(main())


def test_watch_data_sees_other_sessions(zk_backend):
    async def main():
        async with zk_backend.store() as s, zk_backend.store() as other:
            rec = Recorder()
            s.watch_data("/controller", rec)
            await zk_backend.settle()
            await fires(zk_backend, rec, other.create("/controller", b"1", ephemeral=True))
            await fires(zk_backend, rec, other.close())  # ephemeral gone with the session
            assert not await s.exists("/controller")
    run(main())


def test_watch_children(backend):
    async def main():
        async with backend.store() as s:
            rec = Recorder()
            s.watch_children("/brokers/ids", rec)  # not there yet
            await backend.settle()
            await fires(backend, rec, s.create("/brokers/ids/1", b""))
            assert rec.calls[0] == "/brokers/ids"
            await fires(backend, rec, s.create("/brokers/ids/2", b""))
            await fires(backend, rec, s.delete("/brokers/ids/1"))
            assert await s.get_children("/brokers/ids") == ["2"]
            await fires(backend, rec, s.create("/brokers/ids/4", b"", ephemeral=True))
            await fires(backend, rec, s.delete("/brokers/ids/4"))
    run(main())


def test_watch_children_across_recursive_delete(backend):
    async def main():
        async with backend.store() as s:
            await s.create("/brokers/ids/1", b"")
            await s.create("/brokers/ids/2", b"")
            rec = Recorder()
            s.watch_children("/brokers/ids", rec)
            await backend.settle()
            await fires(backend, rec, s.delete("/brokers", recursive=True))
            assert "/brokers/ids" in rec.calls
            assert not await s.exists("/brokers")
            assert await s.get_children("/brokers/ids") == []
            # the watch outlives the node: it fires again when the node comes back
            await fires(backend, rec, s.create("/brokers/ids/3", b""))
            assert await s.get_children("/brokers/ids") == ["3"]
    run(main())


def test_watch_children_not_fired_by_data_change_of_others(backend):
    async def main():
        async with backend.store() as s:
            await s.create("/brokers/ids/1", b"a")
            await s.create("/brokers/topics/t", b"")
            rec = Recorder()
            s.watch_children("/brokers/ids", rec)
            await backend.settle()
            await asyncio.sleep(0.3 if backend.is_zk else 0.05)
            rec.reset()
            await s.set("/brokers/ids/1", b"b")  # a child's data
            await s.set("/brokers/ids", b"own data")  # the node's own data
            await s.create("/brokers/topics/u", b"")  # another node's children
            await s.delete("/brokers/topics/t")
            await s.create("/other", b"")
            await backend.settle()
            await asyncio.sleep(0.3 if backend.is_zk else 0.05)
            assert rec.calls == []
            await fires(backend, rec, s.create("/brokers/ids/2", b""))  # still armed
            assert rec.calls[0] == "/brokers/ids"
    run(main())


# -- ZooKeeper only: connect string, chroot, connection and session ----------------------------

def test_parse_connect():
    assert parse_connect("127.0.0.1:2181") == ("127.0.0.1:2181", "")
    assert parse_connect("a:1,b:2/kafka") == ("a:1,b:2", "/kafka")
    assert parse_connect(" a:1/kafka/prod/ ") == ("a:1", "/kafka/prod")
    assert parse_connect("a:1/") == ("a:1", "")
    for bad in ("", " ", "/kafka", "a:1,,b:2/kafka", "a:1, /x"):
        with pytest.raises(ValueError):
            parse_connect(bad)


def test_chroot_is_created(zk_backend):
    chroot = zk_backend.chroot + "/kafka/prod"  # nested: every level is created
    zk = KazooClient(hosts=zk_backend.zk.connect_string)
    zk.start(timeout=10)
    try:
        assert zk.exists(zk_backend.chroot) is None

        async def main():
            s = ZkMetadataStore(zk_backend.zk.connect_string + chroot)
            await s.start()
            try:
                assert await s.get_children("/") == []
                await s.create("/brokers/ids/1", b"in the chroot")
            finally:
                await s.close()
        run(main())

        assert zk.exists(chroot) is not None
        assert zk.get(chroot + "/brokers/ids/1")[0] == b"in the chroot"
        assert zk.exists("/brokers/ids/1") is None
    finally:
        zk.stop()
        zk.close()


def test_connect_failure_names_the_connect_string():
    connect = f"127.0.0.1:{free_port()}/kafka"  # nothing listens there

    async def main():
        s = ZkMetadataStore(connect, session_timeout_ms=4000, connection_timeout_ms=1500)
        with pytest.raises(StoreError) as info:
            await s.start()
        assert connect in str(info.value)
        # given up after zookeeper.connection.timeout.ms, not the session timeout
        assert "within 1500 ms" in str(info.value), info.value
        await s.close()
        with pytest.raises(StoreError):  # not started
            await s.get("/x")
    run(main())


def test_requests_fail_while_disconnected(zk_backend):
    async def main():
        with TcpProxy(zk_backend.zk.port) as proxy:
            s = ZkMetadataStore(proxy.connect_string + zk_backend.chroot,
                                session_timeout_ms=10000, connection_timeout_ms=1000)
            events = Recorder()
            rec = Recorder()
            try:
                await s.start()
                s.on_session(events)
                await s.create("/eph", b"mine", ephemeral=True)
                await s.create("/n", b"1")
                s.watch_data("/n", rec)
                await zk_backend.settle()
                rec.reset()

                proxy.cut()
                for request in (s.get("/n"), s.set("/n", b"2"), s.create("/m", b""),
                                s.get_children("/")):
                    with pytest.raises(StoreError) as info:
                        await request
                    # a plain StoreError: neither NoNode nor NodeExists nor BadVersion
                    assert type(info.value) is StoreError, info.value
                    # failed by the lost connection or after zookeeper.connection.timeout.ms,
                    # not left waiting for the session to expire (10 s)
                    assert "ConnectionLoss" in str(info.value) or \
                        "no answer within 1000 ms" in str(info.value), info.value
                assert not s.connected

                proxy.restore()
                await eventually(lambda: _readable(s, "/n"), what="reconnection")
                # the same session: its ephemeral node is still there, no session event
                assert await s.get("/eph") == (b"mine", 0)
                assert events.calls == []
                # watches were re-armed, and fired once for what may have been missed
                await rec.wait_for("/n")
                await fires(zk_backend, rec, s.set("/n", b"3"))
            finally:
                await s.close()
    run(main())


def test_read_in_flight_at_a_connection_loss_is_sent_again(zk_backend):
    """A read that was on the wire when the connection dropped (kazoo fails it with
    ConnectionLoss) is sent again after kazoo reconnects, as Kafka's ZooKeeper client
    retries until connected; a write in the same position fails (its outcome is unknown)."""
    async def main():
        with TcpProxy(zk_backend.zk.port) as proxy:
            s = ZkMetadataStore(proxy.connect_string + zk_backend.chroot,
                                session_timeout_ms=10000, connection_timeout_ms=8000)
            try:
                await s.start()
                await s.create("/n", b"1")
                proxy.stall(TcpProxy.DOWNSTREAM)  # requests arrive, answers wait
                read = asyncio.ensure_future(s.get("/n"))
                children = asyncio.ensure_future(s.get_children("/"))
                write = asyncio.ensure_future(s.set("/n", b"2"))
                await asyncio.sleep(0.5)
                assert not (read.done() or children.done() or write.done())
                proxy.cut()  # the connection goes with the three requests in flight
                with pytest.raises(StoreError) as info:
                    await write
                assert "ConnectionLoss" in str(info.value), info.value
                await asyncio.sleep(0.3)
                proxy.restore()
                assert await read in ((b"1", 0), (b"2", 1))
                assert "n" in await children
            finally:
                await s.close()
    run(main())


def test_session_expiry_then_new_session(zk_backend):
    async def main():
        with TcpProxy(zk_backend.zk.port) as proxy:
            s = ZkMetadataStore(proxy.connect_string + zk_backend.chroot,
                                session_timeout_ms=2000)
            observer = zk_backend.new()
            tasks: list[asyncio.Task] = []

            class Reregister(Recorder):
                """Session callback: records events, and on a new session re-creates the
                broker's ephemeral registration as a broker would."""

                def __call__(self, arg: str) -> None:
                    super().__call__(arg)
                    if arg == "reconnected":
                        tasks.append(asyncio.ensure_future(
                            s.create("/brokers/ids/1", b"again", ephemeral=True)))

            events = Reregister()
            data_rec = Recorder()
            child_rec = Recorder()
            try:
                await s.start()
                await observer.start()
                s.on_session(events)
                await s.create("/brokers/ids/1", b"first", ephemeral=True)
                await s.create("/watched", b"0")
                s.watch_data("/watched", data_rec)
                s.watch_children("/brokers/ids", child_rec)
                assert await observer.get("/brokers/ids/1") == (b"first", 0)
                await zk_backend.settle()

                proxy.cut()
                await eventually(lambda: _gone(observer, "/brokers/ids/1"), timeout=15,
                                 what="server-side session expiry")
                assert events.calls == []  # the store cannot know until it reconnects
                proxy.restore()
                await events.wait_for("reconnected", timeout=10)
                assert events.calls == ["expired", "reconnected"]

                # the caller's re-registration in the new session
                await eventually(lambda: _readable(observer, "/brokers/ids/1"),
                                 what="ephemeral re-created")
                assert await observer.get("/brokers/ids/1") == (b"again", 0)
                # watches are armed in the new session
                await fires(zk_backend, data_rec, observer.set("/watched", b"1"))
                await fires(zk_backend, child_rec, observer.create("/brokers/ids/2", b""))
                await s.close()
                assert not await observer.exists("/brokers/ids/1")
                assert events.calls == ["expired", "reconnected"]  # nothing after close()
            finally:
                await s.close()
                await observer.close()
    run(main(), timeout=28)


async def _gone(store: MetadataStore, path: str) -> bool:
    return not await store.exists(path)


async def _readable(store: MetadataStore, path: str) -> bool:
    try:
        return await store.get(path) is not None
    except StoreError:  # not connected (yet)
        return False
