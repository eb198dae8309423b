"""BrokerLiveness (cluster/liveness.py) against real loopback listeners and the local
metadata store: a broker whose port closes is found dead, once; one never reached is
never judged; a new registration is probed afresh; this broker and unreadable
registrations are not probed."""

from __future__ import annotations

import asyncio
import socket

from strom.cluster import model
from strom.cluster.liveness import REFUSALS, BrokerLiveness
from strom.cluster.local_store import LocalMetadataStore


class Listener:
    """A loopback port that accepts connections and can be closed, with its connections,
    as a dying process's kernel would."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self, port: int = 0) -> Listener:
        async def accept(_reader, writer):
            self.writers.append(writer)

        self.server = await asyncio.start_server(accept, "127.0.0.1", port,
                                                 reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def register(store, broker_id: int, port: int) -> bytes:
    data = model.BrokerInfo(broker_id, (model.Endpoint("PLAINTEXT", "127.0.0.1", port),)
                            ).to_json()
    path = model.broker_path(broker_id)
    if await store.exists(path):
        await store.delete(path)
    await store.create(path, data, ephemeral=True)
    return data


async def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


def test_closed_port_is_found_dead_once_and_a_new_registration_is_probed_again(tmp_path):
    async def main():
        store = LocalMetadataStore(str(tmp_path))
        await store.start()
        found: list[int] = []
        liveness = BrokerLiveness(1, store, "PLAINTEXT", found.append)
        listener = await Listener().start()
        first = await register(store, 2, listener.port)
        liveness.start()
        try:
            await wait_for(lambda: listener.writers)  # the probe connected
            assert not liveness.dead
            await listener.close()
            await wait_for(lambda: found)
            assert found == [2]
            assert liveness.is_dead(2, first)

            # the broker comes back on the same port with a new registration
            listener = await Listener().start(listener.port)
            second = await register(store, 2, listener.port)
            assert second != first
            await wait_for(lambda: not liveness.dead)
            await wait_for(lambda: listener.writers)
            assert not liveness.is_dead(2, second)
            await listener.close()
            await wait_for(lambda: len(found) == 2)
            assert liveness.is_dead(2, second)
            # the registrations are read again (a broker joins, and is probed): broker 2's
            # unchanged one is not probed, nor reported, again
            other = await Listener().start()
            await register(store, 5, other.port)
            await wait_for(lambda: other.writers)
            assert found == [2, 2]  # each registration is reported once
            await other.close()
        finally:
            liveness.stop()
            await store.close()

    run(main())


def test_port_never_reached_is_not_judged(tmp_path, monkeypatch):
    """A registered endpoint that refuses from the start (a broker still starting, or an
    advertised address this broker cannot reach) proves nothing."""
    port = free_port()
    attempts: list[int] = []
    open_connection = asyncio.open_connection

    async def counted(host, to_port, *args, **kwargs):
        if to_port == port:
            attempts.append(to_port)
        return await open_connection(host, to_port, *args, **kwargs)

    monkeypatch.setattr(asyncio, "open_connection", counted)

    async def main():
        store = LocalMetadataStore(str(tmp_path))
        await store.start()
        found: list[int] = []
        liveness = BrokerLiveness(1, store, "PLAINTEXT", found.append)
        await register(store, 3, port)
        liveness.start()
        try:
            # twice as many refusals as would prove a broker that was once reached dead
            await wait_for(lambda: len(attempts) >= 2 * REFUSALS + 1)
            assert found == [] and not liveness.dead
        finally:
            liveness.stop()
            await store.close()

    run(main())


def test_this_broker_and_unreadable_registrations_are_not_probed(tmp_path):
    async def main():
        store = LocalMetadataStore(str(tmp_path))
        await store.start()
        found: list[int] = []
        own = await Listener().start()
        liveness = BrokerLiveness(1, store, "PLAINTEXT", found.append)
        await register(store, 1, own.port)
        await store.create(model.broker_path(4), b"not json", ephemeral=True)
        # a third broker, probed in the same pass over the registrations as 1 and 4 are
        # looked at: once it is connected, they were passed over
        other = await Listener().start()
        await register(store, 5, other.port)
        liveness.start()
        try:
            await wait_for(lambda: other.writers)
            assert own.writers == []  # never connected to itself
            await own.close()
            await other.close()
            await wait_for(lambda: found)  # broker 5 is found dead, and it alone
            assert found == [5] and set(liveness.dead) == {5}
        finally:
            liveness.stop()
            await store.close()

    run(main())
