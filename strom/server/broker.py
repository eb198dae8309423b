"""The broker process: start-up, serve, shutdown as three visible phases.

start-up  read the log dirs (recovering after a crash), open the metadata store, register
          this broker (ephemeral /brokers/ids/<id>), try to become controller, load the
          metadata cache, become leader or follower of the partitions assigned here, and
          listen.
serve     connections are handled on one event loop; periodic tasks flush, checkpoint and
          apply retention (blocking fsyncs run in the default executor).
shutdown  stop accepting, close connections, flush and checkpoint every log, write the
          clean-shutdown marker, close the store.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import signal
import time

from strom.api.context import BrokerServices
from strom.clock import Clock
from strom.cluster import model
from strom.cluster.controller import Controller
from strom.cluster.local_store import LocalMetadataStore
from strom.cluster.metadata_cache import MetadataCache
from strom.cluster.store import MetadataStore
from strom.config import BrokerConfig, TopicConfig, validate_topic_configs
from strom.coordinator.group_coordinator import GroupCoordinator
from strom.coordinator.producer_ids import ProducerIdManager
from strom.log.manager import LogManager
from strom.replication.replica_manager import ReplicaManager
from strom.server.connection import Connection
from strom.server.dispatcher import Dispatcher

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

    # --- start-up -------------------------------------------------------------------------
    async def startup(self) -> None:
        started = time.monotonic()
        config = self.config
        if config.get("zookeeper.connect"):
            raise SystemExit("zookeeper.connect is not supported yet: the ZooKeeper metadata "
                             "store is a later milestone (see docs/deviations.md)")
        # the log dirs first: locked, and checked to be this node's, before anything writes
        self.logs = LogManager(config.log_dirs, self.clock, self.broker_id,
                               config.get("cluster.id"))
        self.store = LocalMetadataStore(config.log_dirs[0])
        await self.store.start()
        node = await self.store.get(model.CLUSTER_ID)
        if node is not None:
            self.logs.cluster_id = self.logs.cluster_id or json.loads(node[0])["id"]
        cluster_id = self.logs.prepare_dirs()
        if node is None:
            await self.store.create(model.CLUSTER_ID,
                                    json.dumps({"version": "1", "id": cluster_id}).encode())
        self.cache = MetadataCache(self.store)
        await self._register()
        self.controller = Controller(self.broker_id, self.store, self.cache, config)
        await self.controller.elect()
        await self.cache.start()
        self.logs.startup(self._config_for, self._topic_id_for)
        self.replicas = ReplicaManager(self.broker_id, config, self.clock, self.logs, self.cache)
        self.replicas.on_topics_changed(set(self.cache.topics))
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
            server = await asyncio.start_server(
                functools.partial(self._on_connection, name), host or "0.0.0.0", port,
                reuse_address=True, limit=1 << 20)
            self.servers.append(server)
            log.info("Listening on %s://%s:%d", name, host, port)
        self._start_periodic()
        gc.freeze()  # start-up objects never need collecting: shorter GC pauses later
        log.info("strom broker %d started in %.0f ms (cluster id %s)", self.broker_id,
                 (time.monotonic() - started) * 1000, self.cache.cluster_id)

    async def _register(self) -> None:
        assert self.store is not None
        endpoints = tuple(model.Endpoint(n, h or "127.0.0.1", p)
                          for n, h, p in self.config.advertised())
        info = model.BrokerInfo(self.broker_id, endpoints, self.config.get("broker.rack"))
        path = model.broker_path(self.broker_id)
        if await self.store.exists(path):
            await self.store.delete(path)
        await self.store.create(path, info.to_json(), ephemeral=True)

    def _config_for(self, topic: str) -> TopicConfig:
        info = self.cache.topic(topic)
        return TopicConfig(self.config, validate_topic_configs(info.configs if info else {}))

    def _topic_id_for(self, topic: str):
        info = self.cache.topic(topic)
        return info.topic_id if info else None

    # --- serve ----------------------------------------------------------------------------
    async def _on_connection(self, listener: str, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await Connection(reader, writer, self.dispatcher,
                             self.config.get("socket.request.max.bytes"), listener).serve()
        except Exception:
            log.exception("Connection failed")
        finally:
            self.connections.discard(task)

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
        await self.stopping.wait()

    # --- shutdown ---------------------------------------------------------------------------
    async def shutdown(self) -> None:
        log.info("Shutting down broker %d", self.broker_id)
        for server in self.servers:
            server.close()
        for task in self.tasks:
            task.cancel()
        if hasattr(self, "groups"):
            self.groups.stop()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=5)
        for server in self.servers:
            await server.wait_closed()
        if hasattr(self, "logs"):
            self.logs.shutdown()
        if self.store is not None:
            await self.store.close()
        log.info("Broker %d shut down", self.broker_id)


async def run(config: BrokerConfig) -> None:
    broker = Broker(config)
    try:
        await broker.startup()
        await broker.serve_until_stopped()
    finally:
        await broker.shutdown()
