"""Noticing a dead broker before its ZooKeeper session expires.

In Kafka on ZooKeeper a broker is alive while its ephemeral `/brokers/ids/<id>` exists, so
a broker killed with SIGKILL (or whose process crashed) keeps its leaderships until its
session times out: 18 s with the default zookeeper.session.timeout.ms. But when a process
dies on a host that keeps running, its kernel closes its sockets and refuses new
connections on its port: that is proof of death, and much quicker.

So every broker holds one idle TCP connection to the inter-broker listener of every other
registered broker (nothing is sent on it; a broker never writes first). When that
connection ends, it connects again at once: if the port refuses twice, 100 ms apart, the
broker is dead. Only a refusal counts: a timeout (a hung process, a network partition, a
host that is gone) proves nothing and is left to the ZooKeeper session, as in Kafka. A
broker is judged only after a connection to it succeeded since it registered, so an
endpoint this broker cannot reach (a misconfigured advertised listener) never makes it
look dead.

A dead broker's registration is remembered by its znode data (which holds its
registration time): when it registers again it is probed afresh. The controller leaves
the dead brokers out of its live set (see controller.py); a broker that finds the
controller dead deletes `/controller` so that the others elect a new one at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from strom.cluster import model
from strom.cluster.store import MetadataStore, StoreError
from strom.tasks import essential, run_forever, spawn

log = logging.getLogger(__name__)

REFUSALS = 2  # consecutive refused connections that prove a broker dead
REFUSAL_INTERVAL_S = 0.1
RETRY_INTERVAL_S = 1.0  # after a timeout or an error other than a refusal
# until a first connection succeeds (a broker registers before it listens): soon at first,
# so that a broker that dies right after starting is judged, then less often
FIRST_CONNECT_INTERVALS_S = (0.05, 0.1, 0.2, 0.5, 1.0)
CONNECT_TIMEOUT_S = 5.0


class BrokerLiveness:
    def __init__(self, broker_id: int, store: MetadataStore, listener: str,
                 on_dead: Callable[[int], None]) -> None:
        self.broker_id = broker_id
        self.store = store
        self.listener = listener
        self.on_dead = on_dead
        self.dead: dict[int, bytes] = {}  # broker id -> the registration found dead
        self._probes: dict[int, tuple[bytes, asyncio.Task]] = {}
        self._dirty = asyncio.Event()
        self._loop_task: asyncio.Task | None = None

    def start(self) -> None:
        self.store.watch_children(model.BROKER_IDS, lambda _: self._dirty.set())
        self._dirty.set()
        self._loop_task = essential(spawn(
            run_forever(self._follow_registrations, "Following broker registrations"),
            "broker-liveness"))

    def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        for _, task in self._probes.values():
            task.cancel()
        self._probes.clear()

    def is_dead(self, broker_id: int, registration: bytes) -> bool:
        return self.dead.get(broker_id) == registration

    async def _follow_registrations(self) -> None:
        """One step: wait for a change of /brokers/ids, then probe what it added. On an
        unexpected failure the change is looked at again (after run_forever's back-off)."""
        await self._dirty.wait()
        self._dirty.clear()
        try:
            registrations = await self._registrations()
        except StoreError as e:
            log.debug("Reading broker registrations failed: %s", e)
            return  # the watch fires again when the store is back
        try:
            self._update(registrations)
        except Exception:
            self._dirty.set()
            raise

    async def _registrations(self) -> dict[int, bytes]:
        out = {}
        for child in await self.store.get_children(model.BROKER_IDS):
            node = await self.store.get(model.broker_path(int(child)))
            if node is not None and int(child) != self.broker_id:
                out[int(child)] = node[0]
        return out

    def _update(self, registrations: dict[int, bytes]) -> None:
        self.dead = {b: data for b, data in self.dead.items()
                     if registrations.get(b) == data}
        for b, (data, task) in list(self._probes.items()):
            if registrations.get(b) != data:
                task.cancel()
                del self._probes[b]
        for b, data in registrations.items():
            if b in self._probes or self.dead.get(b) == data:
                continue
            endpoint = self._endpoint(b, data)
            if endpoint is None:
                continue
            task = spawn(self._probe(b, data, endpoint), f"liveness-{b}")
            self._probes[b] = (data, task)

    def _endpoint(self, broker_id: int, data: bytes) -> model.Endpoint | None:
        try:
            info = model.BrokerInfo.from_json(broker_id, data)
        except (ValueError, KeyError):
            return None
        for e in info.endpoints:
            if e.listener == self.listener:
                return e
        return info.endpoints[0] if info.endpoints else None

    async def _probe(self, broker_id: int, data: bytes, endpoint: model.Endpoint) -> None:
        connected_once = False
        refusals = 0
        attempts = 0
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(endpoint.host, endpoint.port), CONNECT_TIMEOUT_S)
            except ConnectionRefusedError:
                if not connected_once:  # not listening yet (starting)
                    await asyncio.sleep(FIRST_CONNECT_INTERVALS_S[
                        min(attempts, len(FIRST_CONNECT_INTERVALS_S) - 1)])
                    attempts += 1
                    continue
                refusals += 1
                if refusals >= REFUSALS:
                    break
                await asyncio.sleep(REFUSAL_INTERVAL_S)
                continue
            except (TimeoutError, OSError):
                refusals = 0
                await asyncio.sleep(RETRY_INTERVAL_S)
                continue
            connected_once = True
            refusals = 0
            try:
                while await reader.read(4096):
                    pass  # never expected: a broker only answers requests
            except OSError:
                pass
            finally:
                writer.close()
        log.warning("Broker %d is dead: %s:%d refuses connections (its ZooKeeper session "
                    "has not expired yet)", broker_id, endpoint.host, endpoint.port)
        self._probes.pop(broker_id, None)
        self.dead[broker_id] = data
        self.on_dead(broker_id)
