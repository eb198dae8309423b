"""The broker process: start-up, serve, shutdown as three visible phases.

start-up  read the log dirs (recovering after a crash), open the metadata store (the
          `local` file, or ZooKeeper when zookeeper.connect is set), register this broker
          (ephemeral /brokers/ids/<id>), run for controller, load the metadata cache,
          become leader or follower of the partitions assigned here (followers start
          fetching), and listen.
serve     connections are handled on one event loop; periodic tasks flush, checkpoint and
          apply retention (blocking fsyncs run in the default executor). When the
          ZooKeeper session expires the broker registers again and re-runs for controller.
shutdown  controlled shutdown first (ZooKeeper, controlled.shutdown.enable): the broker
          deregisters so the controller moves its leaderships to other ISR members, and
          waits for that; then it stops accepting, closes connections, stops the
          fetchers, flushes and checkpoints every log, writes the clean-shutdown marker
          and closes the store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import json
import logging
import os
import signal
import time
import uuid

from strom.api.context import BrokerServices
from strom.clock import Clock
from strom.cluster import model
from strom.cluster.controller import Controller
from strom.cluster.local_store import LocalMetadataStore
from strom.cluster.metadata_cache import MetadataCache
from strom.cluster.store import (
    BadVersionError,
    MetadataStore,
    NodeExistsError,
    NoNodeError,
    StoreError,
)
from strom.cluster.zk_store import ZkMetadataStore
from strom.config import BrokerConfig, TopicConfig, validate_topic_configs
from strom.coordinator.group_coordinator import GroupCoordinator
from strom.coordinator.producer_ids import ProducerIdManager
from strom.log import checkpoint, files
from strom.log.cleaner_manager import LogCleanerManager
from strom.log.manager import LogManager
from strom.log.page_cache import PageCacheWindow
from strom.replication.replica_manager import ReplicaManager
from strom.server.connection import Connection, ConnectionProtocol
from strom.server.dispatcher import Dispatcher
from strom.server.loop_lag import LoopLagMonitor

log = logging.getLogger(__name__)


class Broker:
    def __init__(self, config: BrokerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.broker_id = config.node_id
        self.servers: list[asyncio.Server] = []
        self.connections: set[asyncio.Task] = set()
        self.tasks: list[asyncio.Task] = []
        self.stopping = asyncio.Event()
        self.store: MetadataStore | None = None
        self.loop_lag = LoopLagMonitor()

    # --- start-up -------------------------------------------------------------------------
    async def startup(self) -> None:
        started = time.monotonic()
        config = self.config
        # the log dirs first: locked, and checked to be this node's, before anything writes
        self.logs = LogManager(config.log_dirs, self.clock, self.broker_id,
                               config.get("cluster.id"),
                               PageCacheWindow(config.get("log.page.cache.window.bytes")))
        zk_connect = config.get("zookeeper.connect")
        if zk_connect:
            self.store = ZkMetadataStore(zk_connect,
                                         config.get("zookeeper.session.timeout.ms"),
                                         config.get("zookeeper.connection.timeout.ms"))
        else:
            self.store = LocalMetadataStore(config.log_dirs[0])
        try:
            await self.store.start()
        except StoreError as e:
            raise SystemExit(f"Cannot open the metadata store: {e}") from None
        # As Kafka: the first broker of a new cluster creates /cluster/id (with the id of
        # its log dirs when they have one); every other broker adopts it, and log dirs
        # that name another cluster are refused by prepare_dirs.
        node = await self.store.get(model.CLUSTER_ID)
        if node is None:
            proposed = self.logs.cluster_id or _stored_cluster_id(config.log_dirs) or \
                checkpoint.topic_id_to_str(uuid.uuid4())
            try:
                await self.store.create(model.CLUSTER_ID, json.dumps(
                    {"version": "1", "id": proposed}).encode())
            except NodeExistsError:  # another broker of the new cluster was first
                pass
            node = await self.store.get(model.CLUSTER_ID)
        if node is not None:
            self.logs.cluster_id = self.logs.cluster_id or json.loads(node[0])["id"]
        self.logs.prepare_dirs()
        self.cache = MetadataCache(self.store)
        await self._register()
        self.store.on_session(self._on_session_event)
        self.controller = Controller(self.broker_id, self.store, self.cache, config)
        await self.cache.start()
        self.logs.startup(self._config_for, self._topic_id_for)
        self.replicas = ReplicaManager(self.broker_id, config, self.clock, self.logs,
                                       self.cache, self.store)
        self.replicas.on_topics_changed(set(self.cache.topics))
        self.replicas.start()
        await self.controller.start()
        await self.cache.refresh_now()
        self.producer_ids = ProducerIdManager(self.broker_id, self.store)
        self.groups = GroupCoordinator(self.broker_id, config, self.clock, self.cache,
                                       self.controller, self.replicas)
        self.groups.start()
        listeners = config.listeners()
        self.services = BrokerServices(
            self.broker_id, config, self.clock, self.cache, self.controller, self.replicas,
            self.logs, self.producer_ids, self.groups)
        self.dispatcher = Dispatcher(self.services)
        for name, host, port in listeners:
            server = await asyncio.get_running_loop().create_server(
                functools.partial(ConnectionProtocol, self.config.get("socket.request.max.bytes"),
                                  functools.partial(self._on_connection, name)),
                host or "0.0.0.0", port, reuse_address=True)
            self.servers.append(server)
            log.info("Listening on %s://%s:%d", name, host, port)
        self._start_periodic()
        self.cleaner = LogCleanerManager(self.logs, config, self.clock,
                                         _runner_on(asyncio.get_running_loop()))
        self.cleaner.start()
        self.loop_lag.start()
        gc.freeze()  # start-up objects never need collecting: shorter GC pauses later
        log.info("strom broker %d started in %.0f ms (cluster id %s)", self.broker_id,
                 (time.monotonic() - started) * 1000, self.cache.cluster_id)

    async def _register(self) -> None:
        """Create the ephemeral /brokers/ids/<id>. If it exists (this broker's previous run,
        whose ZooKeeper session has not expired yet, or another broker with the same id),
        wait up to the session timeout for it to go, as the id must be unique; but the
        registration of this broker's own previous run, killed without a clean shutdown, is
        replaced at once (see `_remove_stale_registration`)."""
        assert self.store is not None
        endpoints = tuple(model.Endpoint(n, h or "127.0.0.1", p)
                          for n, h, p in self.config.advertised())
        info = model.BrokerInfo(self.broker_id, endpoints, self.config.get("broker.rack"))
        path = model.broker_path(self.broker_id)
        if isinstance(self.store, LocalMetadataStore):
            if await self.store.exists(path):
                await self.store.delete(path)
            await self.store.create(path, info.to_json(), ephemeral=True)
            return
        assert isinstance(self.store, ZkMetadataStore)
        session_file = os.path.join(self.config.log_dirs[0], SESSION_FILE)
        previous = _read_session_id(session_file)
        current = self.store.session_id
        if current is not None and current != previous:
            checkpoint.write_atomically(session_file, f"{current:x}\n")
        deadline = time.monotonic() + self.config.get("zookeeper.session.timeout.ms") / 1000 + 5
        while True:
            try:
                await self.store.create(path, info.to_json(), ephemeral=True)
                return
            except NodeExistsError:
                owner = await self.store.ephemeral_owner(path)
                if owner is None:
                    continue  # gone meanwhile
                if current is not None and owner[0] == current:
                    return  # still there from this session (a reconnection)
                if previous is not None and owner[0] == previous:
                    await self._remove_stale_registration(path, owner, previous)
                    continue
                if time.monotonic() > deadline:
                    raise SystemExit(f"Broker id {self.broker_id} is registered by another "
                                     "live broker (/brokers/ids/{self.broker_id} exists)"
                                     ) from None
                log.info("Waiting for /brokers/ids/%d of a previous session to expire",
                         self.broker_id)
                await asyncio.sleep(0.5)

    async def _remove_stale_registration(self, path: str, owner: tuple[int, int],
                                         previous: int) -> None:
        """Delete the registration (and /controller, if it holds that) made by the ZooKeeper
        session this broker recorded in its log dir last time. The process that had that
        session held the lock of this log dir for its whole life, and this process holds
        it now: that process is gone, and only its session outlives it until it expires."""
        assert isinstance(self.store, ZkMetadataStore)
        log.info("Removing /brokers/ids/%d of this broker's previous run (ZooKeeper session "
                 "0x%x, not expired yet): that process no longer holds the log dir lock",
                 self.broker_id, previous)
        with contextlib.suppress(NoNodeError, BadVersionError):
            await self.store.delete(path, version=owner[1])
        controller = await self.store.ephemeral_owner(model.CONTROLLER)
        if controller is not None and controller[0] == previous:
            log.info("Removing /controller of this broker's previous run")
            with contextlib.suppress(NoNodeError, BadVersionError):
                await self.store.delete(model.CONTROLLER, version=controller[1])

    def _on_session_event(self, event: str) -> None:
        if event == "expired":
            log.warning("ZooKeeper session expired: this broker's registration is gone")
            self.controller.resign()
        elif event == "reconnected":
            task = asyncio.get_running_loop().create_task(self._reregister())
            self.tasks.append(task)

    async def _reregister(self) -> None:
        try:
            await self._register()
            await self.controller.elect()
            await self.cache.refresh_now()
        except Exception:
            log.exception("Registering again after a new ZooKeeper session failed")

    def _config_for(self, topic: str) -> TopicConfig:
        info = self.cache.topic(topic)
        return TopicConfig(self.config, validate_topic_configs(info.configs if info else {}))

    def _topic_id_for(self, topic: str):
        info = self.cache.topic(topic)
        return info.topic_id if info else None

    # --- serve ----------------------------------------------------------------------------
    def _on_connection(self, listener: str, protocol: ConnectionProtocol) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(listener, protocol))
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)

    async def _serve(self, listener: str, protocol: ConnectionProtocol) -> None:
        try:
            await Connection(protocol, self.dispatcher, listener).serve()
        except asyncio.CancelledError:
            pass  # shutdown cancels the connections
        except Exception:
            log.exception("Connection failed")

    def _start_periodic(self) -> None:
        checkpoint_ms = self.config.get("log.flush.offset.checkpoint.interval.ms")
        retention_ms = self.config.get("log.retention.check.interval.ms")
        self.tasks = [
            self._every(1.0, self._flush, "flush"),
            self._every(checkpoint_ms / 1000, self._checkpoint, "checkpoint"),
            self._every(retention_ms / 1000, self._retention, "retention"),
        ]

    def _every(self, seconds: float, job, name: str) -> asyncio.Task:
        async def loop() -> None:
            while True:
                await asyncio.sleep(max(seconds, 0.01))
                try:
                    await job()
                except Exception:
                    log.exception("Periodic %s failed", name)

        task = asyncio.get_running_loop().create_task(loop(), name=name)
        return task

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for plog in self.logs.logs_needing_flush():
            end, segments = plog.start_flush()
            await loop.run_in_executor(None, plog.fsync_segments, segments)
            plog.flushed(end)

    async def _checkpoint(self) -> None:
        for plog in self.logs.logs.values():
            plog.flush_to_os()
        await asyncio.get_running_loop().run_in_executor(None, self.logs.write_checkpoints)

    async def _retention(self) -> None:
        self.logs.run_retention(self.config.get("log.segment.delete.delay.ms"))

    async def serve_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stopping.set)
            except (NotImplementedError, RuntimeError):
                pass
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGUSR1, self._report_loop_lag)
        await self.stopping.wait()

    def _report_loop_lag(self) -> None:
        """SIGUSR1: log the event loop's lag since the last report (bench/latency.py)."""
        log.info("event loop lag %s", json.dumps(self.loop_lag.report()))

    # --- shutdown ---------------------------------------------------------------------------
    async def _controlled_shutdown(self) -> None:
        """Deregister, then wait (bounded) until the controller has moved every leadership
        that another live in-sync replica can take."""
        assert self.store is not None
        try:
            await self.store.delete(model.broker_path(self.broker_id))
        except StoreError:
            return
        # as Kafka's StopReplica for followed partitions: stop fetching, so no leader
        # counts this broker as in sync (or adds it back) while it goes
        await self.replicas.stop_fetchers()
        retries = self.config.get("controlled.shutdown.max.retries")
        backoff = self.config.get("controlled.shutdown.retry.backoff.ms") / 1000
        deadline = time.monotonic() + max(5.0, (retries + 1) * backoff)
        while time.monotonic() < deadline:
            live = set(self.cache.brokers) - {self.broker_id}
            movable = [f"{t.name}-{p}" for t in self.cache.topics.values()
                       for p, info in t.partitions.items()
                       if info.leader == self.broker_id and live & set(info.isr)]
            if not movable:
                log.info("Controlled shutdown: leadership moved away")
                return
            await asyncio.sleep(0.1)
        log.warning("Controlled shutdown: leadership of %s did not move in time", movable[:5])

    async def shutdown(self) -> None:
        log.info("Shutting down broker %d", self.broker_id)
        zk = self.store is not None and not isinstance(self.store, LocalMetadataStore)
        if zk and hasattr(self, "replicas") and self.config.get("controlled.shutdown.enable"):
            try:
                await self._controlled_shutdown()
            except Exception:
                log.exception("Controlled shutdown failed")
        if hasattr(self, "controller"):
            await self.controller.stop()
        for server in self.servers:
            server.close()
        for task in self.tasks:
            task.cancel()
        self.loop_lag.stop()
        if hasattr(self, "groups"):
            self.groups.stop()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=5)
        for server in self.servers:
            await server.wait_closed()
        if hasattr(self, "replicas"):
            await self.replicas.stop()
        if hasattr(self, "cleaner"):  # off the loop: a cleaner may wait on it
            await asyncio.get_running_loop().run_in_executor(None, self.cleaner.shutdown)
        if hasattr(self, "logs"):
            self.logs.shutdown()
        if hasattr(self, "cache"):
            self.cache.stop()
        if self.store is not None:
            await self.store.close()
        log.info("Broker %d shut down", self.broker_id)


def _runner_on(loop: asyncio.AbstractEventLoop):
    """For the log cleaner's threads: run a function on the event loop (the owner of the
    partition logs) and wait for its result."""
    def run(fn):
        done: concurrent.futures.Future = concurrent.futures.Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as e:  # handed to the waiting thread
                done.set_exception(e)

        loop.call_soon_threadsafe(call)
        return done.result()
    return run


def _stored_cluster_id(log_dirs: list[str]) -> str | None:
    """The cluster id in the log dirs' meta.properties, if any names one."""
    for d in log_dirs:
        props = checkpoint.read_properties_file(os.path.join(d, files.META_PROPERTIES))
        if props.get("cluster.id"):
            return props["cluster.id"]
    return None


async def run(config: BrokerConfig) -> None:
    broker = Broker(config)
    try:
        await broker.startup()
        await broker.serve_until_stopped()
    finally:
        await broker.shutdown()


# The id of the ZooKeeper session that registered this broker, kept in its first log dir:
# after a crash, the registration that session left behind is known to be this broker's own.
SESSION_FILE = "zookeeper-session-id"


def _read_session_id(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip(), 16)
    except (OSError, ValueError):
        return None
