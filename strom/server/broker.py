"""The broker process: start-up, serve, shutdown as three visible phases.

start-up  read the log dirs (recovering after a crash), open the metadata store (the
          `local` file, or ZooKeeper when zookeeper.connect is set), register this broker
          (ephemeral /brokers/ids/<id>), run for controller, load the metadata cache,
          become leader or follower of the partitions assigned here (followers start
          fetching), and listen.
serve     connections are handled on one event loop; periodic tasks flush, checkpoint and
          apply retention (blocking fsyncs and unlinks run in the default executor). When
          the ZooKeeper session expires the broker registers again and re-runs for
          controller. Every task is supervised (strom/tasks.py): a failure is logged with
          its traceback; a periodic step runs again after a back-off; if an essential task
          ends anyway, the broker logs it as fatal, shuts down and exits non-zero.
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
import ipaddress
import json
import logging
import os
import signal
import time
import uuid

from strom.api.context import BrokerServices
from strom.api.fetch_session import FetchSessionCache
from strom.clock import Clock
from strom.cluster import model
from strom.cluster.broker_configs import DynamicBrokerConfigs
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
from strom.config import BrokerConfig, ConfigError, TopicConfig, parse_connection_overrides
from strom.coordinator.group_coordinator import GroupCoordinator
from strom.coordinator.producer_ids import ProducerIdManager
from strom.coordinator.transaction_coordinator import TransactionCoordinator
from strom.log import checkpoint, files
from strom.log.cleaner_manager import LogCleanerManager
from strom.log.manager import LogManager
from strom.log.page_cache import PageCacheWindow
from strom.protocol.framing import MemoryPool
from strom.replication.replica_manager import ReplicaManager
from strom.security.authorizer import Authorizer, parse_super_users
from strom.security.credentials import ScramCredentials
from strom.security.inter_broker import client_security
from strom.security.listener import ListenerSecurity, listener_security
from strom.security.quotas import ClientQuotaManager
from strom.server.connection import Connection, ConnectionProtocol
from strom.server.connection_quotas import Admission, ConnectionQuotas, normalize_ip
from strom.server.dispatcher import Dispatcher
from strom.server.loop_lag import LoopLagMonitor
from strom.server.monitoring import Monitoring
from strom.tasks import essential, run_forever, spawn

log = logging.getLogger(__name__)


class Broker:
    def __init__(self, config: BrokerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.broker_id = config.node_id
        self.servers: list[asyncio.Server] = []
        self.connections: set[asyncio.Task] = set()
        self.served: dict[ConnectionProtocol, str] = {}  # connection -> its listener
        self._resolved: dict[str, list[str]] = {}  # broker host name -> its addresses
        self._resolving: set[str] = set()
        self._resolve_tasks: set[asyncio.Task] = set()
        self._closing_connections = False
        self.tasks: set[asyncio.Task] = set()
        self.stopping = asyncio.Event()
        self.store: MetadataStore | None = None
        self.failure: str | None = None  # why an essential task ended (exit non-zero)
        self.loop_lag = LoopLagMonitor(self.clock)
        self.started = False  # start-up completed (/readyz)
        self.listener_names = [name for name, _, _ in config.listeners()]
        self.monitoring = Monitoring.from_config(self, config)

    # --- start-up -------------------------------------------------------------------------
    async def startup(self) -> None:
        started = time.monotonic()
        config = self.config
        asyncio.get_running_loop().set_exception_handler(self._on_loop_error)
        if self.monitoring is not None:  # first: /healthz answers while the broker starts
            await self.monitoring.start()
        # the log dirs first: locked, and checked to be this node's, before anything writes
        self.logs = LogManager(config.log_dirs, self.clock, self.broker_id,
                               config.get("cluster.id"),
                               PageCacheWindow(config.get("log.page.cache.window.bytes")))
        self.logs.lock_dirs()  # usable and ours alone, before the store opens the first
        self.logs.on_all_dirs_offline = self._all_log_dirs_offline
        self.logs.on_dir_offline = self._log_dir_offline
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
        # before the logs load: they start with the dynamic broker defaults
        self.dynamic_configs = DynamicBrokerConfigs(self.broker_id, self.store, config)
        await self.dynamic_configs.start()
        self.cache = MetadataCache(self.store)
        await self._clear_log_dir_events()  # before registering: see Controller
        await self._register()
        self.store.on_session(self._on_session_event)
        self.controller = Controller(self.broker_id, self.store, self.cache, config)
        await self.cache.start()
        self.logs.startup(self._config_for, self._topic_id_for)
        try:
            inter_broker = client_security(config)
        except ConfigError as e:
            raise SystemExit(f"Inter-broker listener {config.inter_broker_listener()}: {e}") \
                from None
        self.replicas = ReplicaManager(self.broker_id, config, self.clock, self.logs,
                                       self.cache, self.store, inter_broker)
        self.replicas.stats.enabled = self.monitoring is not None
        self.replicas.on_topics_changed(set(self.cache.topics))
        self.fetch_sessions = FetchSessionCache(
            config.get("max.incremental.fetch.session.cache.slots"), self.clock.monotonic)
        self.dynamic_configs.on_change(
            lambda: self.replicas.on_topics_changed(set(self.cache.topics)))
        self.replicas.start()
        await self.controller.start()
        await self.cache.refresh_now()
        self.producer_ids = ProducerIdManager(self.broker_id, self.store)
        self.groups = GroupCoordinator(self.broker_id, config, self.clock, self.cache,
                                       self.controller, self.replicas)
        self.groups.start()
        self.transactions = TransactionCoordinator(
            self.broker_id, config, self.clock, self.cache, self.controller, self.replicas,
            self.producer_ids.generate)
        self.transactions.start()
        # the V2 implicit add (Produce v12) needs the coordinator even without verification
        self.replicas.txn_verifier = self.transactions.verify_for_produce
        self.replicas.txn_verification = config.get("transaction.partition.verification.enable")
        listeners = config.listeners()
        authorizer = None
        if config.get("authorizer.class.name"):
            authorizer = Authorizer(self.store, parse_super_users(config.get("super.users")),
                                    config.get("allow.everyone.if.no.acl.found"))
            await authorizer.start()
        quotas = ClientQuotaManager(self.store, config.get("quota.window.num"),
                                    config.get("quota.window.size.seconds"),
                                    lambda: self.clock.monotonic() * 1000,
                                    config.get("controller.quota.window.num"),
                                    config.get("controller.quota.window.size.seconds"))
        await quotas.start()
        self.services = BrokerServices(
            self.broker_id, config, self.clock, self.cache, self.controller, self.replicas,
            self.logs, self.producer_ids, self.groups, self.transactions,
            dynamic_configs=self.dynamic_configs,
            fetch_sessions=self.fetch_sessions, authorizer=authorizer,
            quotas=quotas)
        self.dispatcher = Dispatcher(
            self.services, self.monitoring.request_stats if self.monitoring else None)
        queued_max = config.get("queued.max.request.bytes")
        pool = MemoryPool(queued_max) if queued_max > 0 else None
        self.quotas = ConnectionQuotas(
            config.get("max.connections"), config.get("max.connections.per.ip"),
            await _startup_overrides(config.get("max.connections.per.ip.overrides")),
            [name for name, _, _ in listeners],
            config.inter_broker_listener(),
            self._broker_addresses)
        self.security: dict[str, ListenerSecurity] = {}
        credentials = ScramCredentials(self.store)
        for name, _, _ in listeners:
            try:
                self.security[name] = listener_security(config, name, credentials)
            except ConfigError as e:
                raise SystemExit(f"Listener {name}: {e}") from None
        for name, host, port in listeners:
            security = self.security[name]
            server = await asyncio.get_running_loop().create_server(
                functools.partial(ConnectionProtocol, self.config.get("socket.request.max.bytes"),
                                  functools.partial(self._on_connection, name), pool),
                host or "0.0.0.0", port, reuse_address=True, ssl=security.ssl_context)
            self.servers.append(server)
            log.info("Listening on %s://%s:%d (%s)", name, host, port, security.protocol)
        self._start_periodic()
        self.cleaner = LogCleanerManager(self.logs, config, self.clock,
                                         _runner_on(asyncio.get_running_loop()),
                                         worker_processes=True)
        self.cleaner.start()
        self.dynamic_configs.on_change(self.cleaner.reconfigure)
        self.dynamic_configs.on_change(
            lambda: spawn(self._apply_connection_limits(), "apply connection limits",
                          self.tasks))
        self.loop_lag.start()
        gc.freeze()  # start-up objects never need collecting: shorter GC pauses later
        self.started = True
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
            spawn(self._reregister(), "reregister", self.tasks)

    async def _reregister(self) -> None:
        try:
            await self._register()
            await self.controller.elect()
            await self.cache.refresh_now()
        except Exception:
            log.exception("Registering again after a new ZooKeeper session failed")

    def _config_for(self, topic: str) -> TopicConfig:
        info = self.cache.topic(topic)
        return TopicConfig.of(self.config, info.configs if info else None)

    def _topic_id_for(self, topic: str):
        info = self.cache.topic(topic)
        return info.topic_id if info else None

    # --- serve ----------------------------------------------------------------------------
    def _on_connection(self, listener: str, protocol: ConnectionProtocol) -> None:
        ip = _peer_ip(protocol)
        admission = self.quotas.admit(listener, ip, (protocol, listener))
        if admission is Admission.ACCEPT:
            self._start_serving(listener, protocol)
            if self.quotas.excess():
                self._close_least_recent()
        elif admission is Admission.PARK:
            log.debug("Connection from %s waits: max.connections (%d) reached", ip,
                      self.quotas.max_connections)
            protocol.pause_reading("max.connections")
        elif admission is Admission.REFUSE_IP:
            log.info("Rejected connection from %s, address already has the configured "
                     "maximum of %d connections.", ip, self.quotas.limit_for(ip))
            protocol.transport.close()
        else:
            log.info("Rejected connection from %s: max.connections (%d) reached and %d "
                     "connections wait already", ip, self.quotas.max_connections,
                     len(self.quotas.parked))
            protocol.transport.close()

    def _start_serving(self, listener: str, protocol: ConnectionProtocol) -> None:
        self.served[protocol] = listener
        task = asyncio.get_running_loop().create_task(self._serve(listener, protocol))
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)

    async def _apply_connection_limits(self) -> None:
        """Dynamic max.connections, max.connections.per.ip(.overrides): for the connections
        accepted from now on (as Kafka, served ones are not closed); a higher
        max.connections serves parked connections at once."""
        try:
            overrides = await _resolve_overrides(
                self.config.get("max.connections.per.ip.overrides"))
        except OSError as e:  # a name that does not resolve (now): the previous ones stay
            log.error("max.connections.per.ip.overrides not applied: %s", e)
            overrides = None
        self.quotas.max_connections = self.config.get("max.connections")
        self.quotas.max_per_ip = self.config.get("max.connections.per.ip")
        if overrides is not None:
            self.quotas.overrides = {normalize_ip(h): n for h, n in overrides.items()}
        self._serve_parked()

    def _connection_ended(self, protocol: ConnectionProtocol) -> None:
        """Release its slot and give it to the connection that waited longest."""
        if self.served.pop(protocol, None) is None:
            return
        self.quotas.release(_peer_ip(protocol))
        self._serve_parked()

    def _serve_parked(self) -> None:
        """Serve the parked connections that fit under max.connections now."""
        while (turn := self.quotas.next_parked()) is not None:
            waiting, listener = turn
            if waiting.transport.is_closing() or self._closing_connections:
                waiting.transport.close()  # gone while it waited, or shutting down
                self.quotas.release(_peer_ip(waiting))
                continue
            waiting.resume_reading("max.connections")
            self._start_serving(listener, waiting)

    def _close_least_recent(self) -> None:
        """Kafka's closeExcessConnections: a connection on the inter-broker listener took
        the total beyond max.connections; close the least recently active connection of
        another listener."""
        candidates = [p for p, name in self.served.items()
                      if name != self.quotas.inter_broker_listener
                      and not p.transport.is_closing()]
        if candidates:
            victim = min(candidates, key=lambda p: p.last_active)
            log.info("Closing connection from %s: max.connections (%d) reached by "
                     "inter-broker connections", _peer_ip(victim), self.quotas.max_connections)
            victim.transport.close()

    def _broker_addresses(self) -> dict[str, int]:
        """Address -> how many other registered brokers are there (their host names are
        resolved in the background, so a name is known from the next call on)."""
        out: dict[str, int] = {}
        for broker_id, info in self.cache.brokers.items():
            if broker_id == self.broker_id:
                continue
            ips: set[str] = set()
            for endpoint in info.endpoints:
                try:
                    ips.add(str(ipaddress.ip_address(endpoint.host)))
                except ValueError:
                    ips.update(self._resolved.get(endpoint.host, ()))
                    if endpoint.host not in self._resolved:
                        self._resolve_later(endpoint.host)
            for ip in ips:
                out[ip] = out.get(ip, 0) + 1
        return out

    def _resolve_later(self, host: str) -> None:
        if host in self._resolving:
            return
        self._resolving.add(host)

        async def resolve() -> None:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, None)
                self._resolved[host] = sorted({i[4][0] for i in infos})
            except (OSError, UnicodeError) as e:
                log.warning("Cannot resolve broker host %s (for max.connections): %s",
                            host, e)
                self._resolved[host] = []  # tried again in a minute, not on every call
                asyncio.get_running_loop().call_later(60, self._resolved.pop, host, None)
            finally:
                self._resolving.discard(host)

        task = asyncio.get_running_loop().create_task(resolve())
        self._resolve_tasks.add(task)
        task.add_done_callback(self._resolve_tasks.discard)

    async def _serve(self, listener: str, protocol: ConnectionProtocol) -> None:
        try:
            await Connection(protocol, self.dispatcher, listener,
                             self.config.get("connections.max.idle.ms"),
                             self.security.get(listener)).serve()
        except asyncio.CancelledError:
            pass  # shutdown cancels the connections
        except Exception:
            log.exception("Connection failed")
        finally:
            self._connection_ended(protocol)

    def _start_periodic(self) -> None:
        checkpoint_ms = self.config.get("log.flush.offset.checkpoint.interval.ms")
        retention_ms = self.config.get("log.retention.check.interval.ms")
        self._every(1.0, self._flush, "flush")
        self._every(checkpoint_ms / 1000, self._checkpoint, "checkpoint")
        self._every(retention_ms / 1000, self._retention, "retention")
        self._every(self.config.get("producer.id.expiration.check.interval.ms") / 1000,
                    self._expire_producer_ids, "producer-id-expiration")

    def _every(self, seconds: float, job, name: str) -> asyncio.Task:
        return essential(spawn(run_forever(job, f"Periodic {name}", max(seconds, 0.01)),
                               name, self.tasks))

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """The loop's exception handler: asyncio's own report (logged with the traceback),
        and for an essential task that ended (strom/tasks.py) a fatal error: the broker
        stops, and `run` exits with a non-zero status."""
        loop.default_exception_handler(context)
        if context.get("fatal") and self.failure is None:
            self.failure = context.get("message", "an essential task failed")
            log.critical("%s: shutting down the broker", self.failure)
            self.stopping.set()

    def _all_log_dirs_offline(self) -> None:
        """Every log dir failed (KIP-112): stop, exiting non-zero, so the controller moves
        this broker's leaderships to replicas that can still write. Kafka halts at once;
        strom goes through its shutdown (controlled shutdown first), which moves them
        sooner, and writes nothing to the failed dirs. The stop begins half a second
        later, so the answers in flight (KAFKA_STORAGE_ERROR for the append that failed)
        reach their clients before the connections close."""
        if self.failure is None:
            self.failure = "all log dirs have failed"
            asyncio.get_running_loop().call_later(0.5, self.stopping.set)

    def _log_dir_offline(self, d: str, partitions: list[tuple[str, int]]) -> None:
        """A log dir failed and others are left (KIP-112): stop following its partitions
        and report it to the controller, which moves their leaderships to other in-sync
        replicas and takes this broker out of their ISRs."""
        replicas = getattr(self, "replicas", None)
        if replicas is not None:
            replicas.stop_fetching(partitions)
        spawn(self._report_log_dir_failure(d, partitions), "log-dir-event", self.tasks)

    async def _report_log_dir_failure(self, d: str, partitions: list[tuple[str, int]]
                                      ) -> None:
        assert self.store is not None
        path = model.log_dir_event_path(self.broker_id, self.config.log_dirs.index(d))
        data = model.encode_log_dir_event(self.broker_id, partitions)
        for attempt in range(10):
            try:
                if await self.store.exists(path):  # only this broker writes it
                    await self.store.set(path, data)
                else:
                    await self.store.create(path, data)
                log.warning("Reported the failed log dir %s to the controller", d)
                return
            except (StoreError, OSError) as e:  # the local store's file may be in that dir
                log.error("Reporting the failed log dir %s failed: %s", d, e)
                await asyncio.sleep(min(1.0 * (attempt + 1), 5.0))

    async def _clear_log_dir_events(self) -> None:
        """Every log dir is back at a start: delete the failures this broker reported."""
        assert self.store is not None
        parent = model.LOG_DIR_EVENT_NOTIFICATION
        for child in await self.store.get_children(parent):
            node = await self.store.get(f"{parent}/{child}")
            try:
                mine = node is not None and \
                    model.decode_log_dir_event(node[0])[0] == self.broker_id
            except (ValueError, KeyError, TypeError):
                mine = False
            if mine:
                try:
                    await self.store.delete(f"{parent}/{child}")
                except NoNodeError:
                    pass

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        timed = self.monitoring.flush_latency if self.monitoring else None
        for plog in self.logs.logs_needing_flush():
            end, segments = plog.start_flush()
            begun = self.clock.monotonic()
            try:
                await loop.run_in_executor(None, plog.fsync_segments, segments)
            except OSError as e:  # an fsync or the leader-epoch-checkpoint (KIP-112)
                log.error("Flushing %s-%d failed: %s", plog.topic, plog.partition, e)
                plog.dir_failed(e)
                continue
            if timed is not None:  # Kafka's LogFlushRateAndTimeMs
                timed.record((self.clock.monotonic() - begun) * 1000.0)
            plog.flushed(end)

    async def _checkpoint(self) -> None:
        for plog in self.logs.logs.values():
            plog.flush_to_os()
        snapshot = self.logs.checkpoint_snapshot()  # on the loop, which owns the logs
        failed = await asyncio.get_running_loop().run_in_executor(
            None, LogManager.write_checkpoint_snapshot, snapshot)
        self.logs.checkpoint_failed(failed)  # KIP-112: those dirs go offline

    async def _retention(self) -> None:
        self.logs.run_retention()

    async def _expire_producer_ids(self) -> None:
        expired = self.logs.remove_expired_producers()
        if expired:
            log.debug("Expired %d producer ids (producer.id.expiration.ms)", expired)

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
        if self.monitoring is not None:
            await self.monitoring.close()
        if hasattr(self, "controller"):
            await self.controller.stop()
        for server in self.servers:
            server.close()
        for task in list(self.tasks):
            task.cancel()
        self.loop_lag.stop()
        if hasattr(self, "groups"):
            self.groups.stop()
        if hasattr(self, "transactions"):
            await self.transactions.stop()
        self._closing_connections = True
        for task in list(self._resolve_tasks):
            task.cancel()
        if hasattr(self, "quotas"):
            for waiting, _ in self.quotas.parked:
                waiting.transport.close()
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


def _peer_ip(protocol: ConnectionProtocol) -> str:
    peer = protocol.transport.get_extra_info("peername") if protocol.transport else None
    return peer[0] if peer else ""


async def _resolve_overrides(text: str | None) -> dict[str, int]:
    """max.connections.per.ip.overrides with host names resolved (as Kafka resolves them
    when the value is applied); OSError naming the host that does not resolve."""
    out: dict[str, int] = {}
    for host, count in parse_connection_overrides(text).items():
        try:
            out[str(ipaddress.ip_address(host))] = count
            continue
        except ValueError:
            pass
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None)
        except OSError as e:
            raise OSError(f"cannot resolve {host!r} ({e})") from None
        for info in infos:
            out[info[4][0]] = count
    return out


async def _startup_overrides(text: str | None) -> dict[str, int]:
    """The static value at start-up: a name that does not resolve is a start-up error."""
    try:
        return await _resolve_overrides(text)
    except OSError as e:
        raise SystemExit("Invalid value for configuration max.connections.per.ip."
                         f"overrides: {e}") from None


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
    if broker.failure is not None:
        raise SystemExit(f"strom broker {broker.broker_id} failed: {broker.failure}")


# The id of the ZooKeeper session that registered this broker, kept in its first log dir:
# after a crash, the registration that session left behind is known to be this broker's own.
SESSION_FILE = "zookeeper-session-id"


def _read_session_id(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip(), 16)
    except (OSError, ValueError):
        return None
