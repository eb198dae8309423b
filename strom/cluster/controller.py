"""The Controller: the one broker that elects partition leaders.

It is written once against MetadataStore. A broker becomes controller by creating the
ephemeral `/controller` znode and bumping `/controller_epoch`; with the `local` store the
only broker always wins, with ZooKeeper the first to create it, and when the controller's
session ends the others race again. Every partition state the controller writes is a
compare-and-set on the state znode's version, fenced by the version of `/controller_epoch`
it wrote: a controller that lost its office (a newer epoch exists) cannot write.

The active controller watches `/brokers/ids`. When brokers come or go it re-elects:
- a partition whose leader is gone gets the first live ISR member (in replica order) as
  leader, with the leader epoch bumped; dead brokers leave the ISR;
- when no ISR member is live, the partition goes offline (leader -1, the ISR kept so the
  last in-sync replica can lead again when it returns), unless the topic's
  unclean.leader.election.enable allows an out-of-sync live replica to lead (logged as a
  possible loss of acknowledged records).
A broker whose log dir failed (KIP-112) writes an event under `/log_dir_event_notification`
naming that dir's partitions; the controller watches it too and re-elects the same way, with
that broker's replicas of those partitions counted as dead (`_offline_replicas`).
Leaders change the ISR themselves (see replication/replica_manager.py).

Topic administration (create, delete, partitions, configs) is plain znode writes that
any broker may do: creation writes the configs, then the assignment, then each
partition's state (leader = first live replica, epoch 0, ISR = live replicas).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from strom.cluster import leadership, log_dir_failures, model, reassignment, topic_names
from strom.cluster.controller_context import StateChange
from strom.cluster.liveness import BrokerLiveness
from strom.cluster.metadata_cache import MetadataCache
from strom.cluster.store import (
    BadVersionError,
    FencedError,
    MetadataStore,
    NodeExistsError,
    NoNodeError,
    StoreError,
)
from strom.config import BrokerConfig, ConfigError, TopicConfig, validate_topic_configs
from strom.protocol.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidReplicaAssignment,
    InvalidReplicationFactor,
    InvalidRequest,
    NotController,
    TopicAlreadyExists,
    UnknownTopicOrPartition,
)
from strom.tasks import essential, spawn

log = logging.getLogger(__name__)

# partition states a topic creation writes at once (see _write_partition_states)
STATE_WRITES_AT_ONCE = 512


@dataclass(frozen=True, slots=True)
class NewTopic:
    name: str
    num_partitions: int  # -1: num.partitions
    replication_factor: int  # -1: default.replication.factor
    assignment: dict[int, tuple[int, ...]] | None = None
    configs: dict[str, str | None] | None = None


@dataclass(frozen=True, slots=True)
class CreatedTopic:
    name: str
    topic_id: uuid.UUID
    num_partitions: int
    replication_factor: int
    configs: dict[str, str]
    warning: str | None = None


def _round_robin(n: int, num_partitions: int, replication_factor: int, start_partition: int,
                 start_index: int | None, shift: int | None
                 ) -> Iterator[tuple[int, int, int]]:
    """The round-robin both placements share, over a list of `n` brokers: per partition
    (partition id, index of its leader, the shift for its followers). Leaders go round from
    a random start (or `start_index`); the shift starts random (or `shift`) and grows each
    time the partitions wrap around the brokers. The replication factor is checked first."""
    if replication_factor <= 0:
        raise InvalidReplicationFactor("Replication factor must be larger than 0.")
    if replication_factor > n:
        raise InvalidReplicationFactor(
            f"Replication factor: {replication_factor} larger than available brokers: {n}.")
    start = random.randrange(n) if start_index is None else start_index
    next_shift = random.randrange(n) if shift is None else shift
    for pid in range(start_partition, start_partition + num_partitions):
        if pid > 0 and pid % n == 0:
            next_shift += 1
        yield pid, (pid + start) % n, next_shift


def assign_replicas(brokers: list[int], num_partitions: int, replication_factor: int,
                    start_partition: int = 0, start_index: int | None = None,
                    shift: int | None = None) -> dict[int, tuple[int, ...]]:
    """Kafka's rack-unaware placement: leaders round-robin from a random start, followers
    at a shift that grows each time the partitions wrap around the brokers."""
    n = len(brokers)
    brokers = sorted(brokers)
    out: dict[int, tuple[int, ...]] = {}
    for pid, first, next_shift in _round_robin(n, num_partitions, replication_factor,
                                               start_partition, start_index, shift):
        replicas = [brokers[first]]
        for j in range(replication_factor - 1):
            step = 1 + (next_shift + j) % (n - 1)
            replicas.append(brokers[(first + step) % n])
        out[pid] = tuple(replicas)
    return out


def rack_alternated(racks: dict[int, str]) -> list[int]:
    """Brokers ordered rack by rack in turn (racks sorted by name, brokers by id within a
    rack): r1 {0,1,2}, r2 {3,4,5}, r3 {6,7,8} gives 0, 3, 6, 1, 4, 7, 2, 5, 8."""
    by_rack: dict[str, list[int]] = {}
    for broker, rack in sorted(racks.items()):
        by_rack.setdefault(rack, []).append(broker)
    queues = [by_rack[r] for r in sorted(by_rack)]
    out: list[int] = []
    i = 0
    while any(queues):
        if queues[i]:
            out.append(queues[i].pop(0))
        i = (i + 1) % len(queues)
    return out


def assign_replicas_rack_aware(racks: dict[int, str], num_partitions: int,
                               replication_factor: int, start_partition: int = 0,
                               start_index: int | None = None, shift: int | None = None
                               ) -> dict[int, tuple[int, ...]]:
    """Kafka's rack-aware placement: the same round-robin as `assign_replicas` over the
    rack-alternated broker list; a follower is skipped while its rack (or the broker) already
    holds a replica of the partition and some rack (broker) holds none."""
    brokers = rack_alternated(racks)
    n = len(brokers)
    num_racks = len(set(racks.values()))
    out: dict[int, tuple[int, ...]] = {}
    for pid, first, next_shift in _round_robin(n, num_partitions, replication_factor,
                                               start_partition, start_index, shift):
        leader = brokers[first]
        replicas = [leader]
        used_racks = {racks[leader]}
        used = {leader}
        k = 0
        for _ in range(replication_factor - 1):
            while True:
                step = 1 + (next_shift * num_racks + k) % (n - 1)
                broker = brokers[(first + step) % n]
                k += 1
                if (racks[broker] not in used_racks or len(used_racks) == num_racks) and \
                        (broker not in used or len(used) == n):
                    break
            replicas.append(broker)
            used_racks.add(racks[broker])
            used.add(broker)
        out[pid] = tuple(replicas)
    return out


class Controller:
    """The controller office of one broker. It implements ControllerContext
    (controller_context.py), the only face leadership.py and reassignment.py see, and starts
    their loops when it takes the office."""

    def __init__(self, broker_id: int, store: MetadataStore, cache: MetadataCache,
                 config: BrokerConfig) -> None:
        self.broker_id = broker_id
        self.store = store
        self.cache = cache
        self.config = config
        self.epoch = 0
        self.epoch_version = -1  # the /controller_epoch znode version this controller wrote
        self.active = False
        self.unclean_leader_elections = 0  # read by strom.metrics
        self.lock = asyncio.Lock()  # see ControllerContext
        self._watching = False
        self._stopped = False
        self._tasks: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        self._registrations: dict[int, bytes] = {}  # broker id -> its /brokers/ids data
        listener = config.inter_broker_listener()
        self.liveness = BrokerLiveness(broker_id, store, listener,
                                       lambda b: self._spawn(lambda: self._on_broker_dead(b)))

    @property
    def fence(self) -> tuple[str, int]:
        return (model.CONTROLLER_EPOCH, self.epoch_version)

    async def start(self) -> None:
        """Run for controller now, and again whenever the office falls vacant."""
        self.liveness.start()
        self.store.watch_data(model.CONTROLLER, lambda _: self._spawn(self.elect))
        node = await self.store.get(model.CONTROLLER)
        if node is not None and node[0] and \
                json.loads(node[0]).get("brokerid") == self.broker_id:
            # left by this broker's previous run, whose session has not expired yet
            try:
                await self.store.delete(model.CONTROLLER, node[1])
            except StoreError:
                pass
        await self.elect()

    async def stop(self) -> None:
        """Stop acting as controller (shutdown); the store's close removes /controller."""
        self._stopped = True
        self.active = False
        self.liveness.stop()
        for task in list(self._tasks) + self._loops:
            task.cancel()

    def resign(self) -> None:
        if self.active:
            log.warning("Broker %d is no longer the controller (epoch %d)", self.broker_id,
                        self.epoch)
        self.active = False

    def _spawn(self, job) -> None:
        if self._stopped:
            return
        task = asyncio.get_running_loop().create_task(job())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Controller task failed", exc_info=task.exception())

    async def elect(self) -> bool:
        """Try to become controller; True if this broker now is."""
        if self.active or self._stopped:
            return self.active
        data = json.dumps({"version": 2, "brokerid": self.broker_id,
                           "timestamp": str(int(time.time() * 1000))}).encode()
        try:
            await self.store.create(model.CONTROLLER, data, ephemeral=True)
        except NodeExistsError:
            return False
        while True:
            node = await self.store.get(model.CONTROLLER_EPOCH)
            try:
                if node is None:
                    self.epoch = 1
                    await self.store.create(model.CONTROLLER_EPOCH, b"1")
                    self.epoch_version = 0
                else:
                    self.epoch = int(node[0] or b"0") + 1
                    self.epoch_version = await self.store.set(
                        model.CONTROLLER_EPOCH, str(self.epoch).encode(), node[1])
                break
            except (NodeExistsError, BadVersionError):
                continue  # a stale controller bumped it meanwhile: read again
        self.active = True
        log.info("Broker %d is the controller (epoch %d)", self.broker_id, self.epoch)
        if not self._loops:
            # both loops log and retry their own failures: if one ends, the broker fails
            self._loops = [
                essential(spawn(leadership.rebalance_loop(self), "leader-rebalance")),
                essential(spawn(reassignment.progress_loop(self), "reassignment-progress"))]
        if not self._watching:
            self._watching = True
            self.store.watch_children(model.BROKER_IDS,
                                      lambda _: self._spawn(self.on_brokers_changed))
            try:  # KIP-112: a broker reports a failed log dir here
                await self.store.create(model.LOG_DIR_EVENT_NOTIFICATION)
            except NodeExistsError:
                pass
            self.store.watch_children(model.LOG_DIR_EVENT_NOTIFICATION,
                                      lambda _: self._spawn(self.on_brokers_changed))
        await self.on_brokers_changed()
        return True

    def require_active(self) -> None:
        if not self.active:
            raise NotController("This broker is not the controller")

    def live_brokers(self) -> list[int]:
        """Registered brokers (as the metadata cache knows them), less those found dead."""
        return sorted(set(self.cache.brokers) - set(self.liveness.dead))

    async def live_set(self) -> set[int]:
        """Registered brokers (as ZooKeeper knows them now), less those found dead."""
        registered = {int(b) for b in await self.store.get_children(model.BROKER_IDS)}
        return registered - set(self.liveness.dead)

    async def _on_broker_dead(self, broker_id: int) -> None:
        """liveness.py found a registered broker dead: as controller, re-elect as if it had
        gone from ZooKeeper; otherwise, if it was the controller, vacate its office."""
        if self.active:
            await self.on_brokers_changed()
            return
        node = await self.store.get(model.CONTROLLER)
        if node is None or not node[0] or json.loads(node[0]).get("brokerid") != broker_id:
            return
        log.warning("Controller %d is dead: deleting /controller so that another broker "
                    "takes over", broker_id)
        try:
            await self.store.delete(model.CONTROLLER, node[1])
        except StoreError:
            pass  # gone already (its session expired, or another broker deleted it)

    # --- leader election ------------------------------------------------------------------
    async def on_brokers_changed(self) -> None:
        """Elect leaders for partitions whose leader is gone; drop dead brokers from ISRs."""
        if not self.active:
            return
        async with self.lock:
            registrations: dict[int, bytes] = {}
            for child in await self.store.get_children(model.BROKER_IDS):
                node = await self.store.get(model.broker_path(int(child)))
                if node is not None:
                    registrations[int(child)] = node[0]
            # registered brokers found dead (liveness.py) count as gone
            live = {b for b, data in registrations.items()
                    if not self.liveness.is_dead(b, data)}
            # a broker that registered anew since the last look (a crash and a quick
            # restart between two watch events) is handled as failed, then started, as
            # Kafka does: its leaderships move and it must catch up to rejoin the ISR
            bounced = {b for b, data in registrations.items()
                       if b in self._registrations and self._registrations[b] != data}
            self._registrations = registrations
            dead = sorted(set(registrations) - live)
            log.info("Controller %d: live brokers %s%s%s", self.broker_id, sorted(live),
                     f" (restarted: {sorted(bounced)})" if bounced else "",
                     f" (dead, still registered: {dead})" if dead else "")
            offline = await self._offline_replicas(registrations)
            names = await self.store.get_children(model.TOPICS)
            if bounced:
                for name in names:
                    await self._reelect_topic(name, live - bounced, offline)
            for name in names:
                await self._reelect_topic(name, live, offline)

    async def _offline_replicas(self, registrations: dict[int, bytes]
                                ) -> dict[tuple[str, int], frozenset[int]]:
        """KIP-112: partition -> the registered brokers whose replica of it sits in a failed
        log dir (log_dir_failures.py). Kafka's onBrokerLogDirFailure deletes the events and
        keeps the replicas in memory; here they stay until the broker restarts, so a new
        controller reads them too."""
        out = await log_dir_failures.read(self.store, registrations)
        if out:
            log.info("Controller %d: replicas in failed log dirs: %s", self.broker_id,
                     {f"{t}-{p}": sorted(b) for (t, p), b in sorted(out.items())})
        return out

    async def _reelect_topic(self, name: str, live: set[int],
                             offline: dict[tuple[str, int], frozenset[int]] | None = None
                             ) -> None:
        node = await self.store.get(model.topic_path(name))
        if node is None:
            return
        assignment = model.TopicAssignment.from_json(name, node[0], node[1])
        unclean = self._unclean_allowed(name)
        offline = offline or {}
        for p, replicas in sorted(assignment.replicas.items()):
            gone = offline.get((name, p))
            if gone:
                await self.update_state(name, p, lambda st, q=p, r=replicas, g=gone:
                                        self._elect_without(name, q, st, r, live, g, unclean))
                continue
            await self.update_state(name, p, lambda st, q=p, r=replicas: self._elect(
                name, q, st, r, live, unclean), create_missing=(replicas, live))

    def _elect_without(self, name: str, p: int, st: model.PartitionState,
                       replicas: tuple[int, ...], live: set[int], offline: frozenset[int],
                       unclean: bool) -> model.PartitionState | None:
        """As `_elect`, with the `offline` replicas (in a failed log dir) counted as dead,
        as Kafka's controller moves them to OfflineReplica: a new leader from the rest of
        the ISR, and they leave the ISR; when no other replica can lead (nor, with
        unclean.leader.election.enable, any live replica outside it) the partition goes
        offline: leader -1, the ISR kept (Kafka keeps an ISR of one as it is), so that
        the broker leads again once it restarts with the dir healthy."""
        return self._elect(name, p, st, replicas, live - offline, unclean)

    def _unclean_allowed(self, name: str) -> bool:
        info = self.cache.topic(name)
        try:
            config = TopicConfig.of(self.config, info.configs if info else None)
        except ConfigError:
            config = TopicConfig.of(self.config)
        return bool(config.get("unclean.leader.election.enable"))

    def _elect(self, name: str, p: int, st: model.PartitionState, replicas: tuple[int, ...],
               live: set[int], unclean: bool) -> model.PartitionState | None:
        """The partition's next state, or None if it stays as it is."""
        live_isr = tuple(b for b in st.isr if b in live)
        if st.leader in live:
            if live_isr == st.isr:
                return None
            return model.PartitionState(st.leader, st.leader_epoch, live_isr, self.epoch)
        candidates = [b for b in replicas if b in live_isr]
        if candidates:
            leader = candidates[0]
            return model.PartitionState(leader, st.leader_epoch + 1, live_isr, self.epoch)
        live_replicas = [b for b in replicas if b in live]
        if unclean and live_replicas:
            leader = live_replicas[0]
            self.unclean_leader_elections += 1  # Kafka's UncleanLeaderElectionsPerSec
            log.warning("Unclean leader election for %s-%d: broker %d was not in the ISR %s; "
                        "records acknowledged by the old ISR may be lost", name, p, leader,
                        list(st.isr))
            return model.PartitionState(leader, st.leader_epoch + 1, (leader,), self.epoch)
        if st.leader == model.NO_LEADER:
            return None
        log.warning("%s-%d is offline: no live in-sync replica (ISR %s)", name, p,
                    list(st.isr))
        # keep the ISR: its last members are the ones allowed to lead when they return
        return model.PartitionState(model.NO_LEADER, st.leader_epoch + 1, st.isr, self.epoch)

    async def update_state(self, name: str, p: int, change: StateChange,
                           create_missing: tuple[tuple[int, ...], set[int]] | None = None
                           ) -> model.PartitionState | None:
        """Apply `change(state) -> new state | None` with compare-and-set, fenced by our
        controller epoch; retried when a leader's ISR write got in between. With
        `create_missing` (replicas, live brokers), a partition without a state znode (its
        creator died between the assignment and the states) gets its first state."""
        path = model.partition_state_path(name, p)
        for _ in range(10):
            node = await self.store.get(path)
            if node is None:
                if create_missing is not None:
                    log.warning("%s-%d has no partition state: creating it", name, p)
                    replicas, live = create_missing
                    await self._write_partition_states(name, {p: replicas}, live)
                return None
            st = model.PartitionState.from_json(node[0], node[1])
            new = change(st)
            if new is None:
                return None
            try:
                await self.store.set(path, new.to_json(), node[1], fence=self.fence)
            except BadVersionError:
                continue
            except FencedError:
                self.resign()
                raise NotController("A newer controller exists") from None
            if new.leader != st.leader or new.leader_epoch != st.leader_epoch:
                log.info("%s-%d: leader %d -> %d, epoch %d, ISR %s", name, p, st.leader,
                         new.leader, new.leader_epoch, list(new.isr))
            return new
        log.warning("%s-%d: partition state kept changing; giving up for now", name, p)
        return None

    # --- topics -------------------------------------------------------------------------
    async def create_topic(self, new: NewTopic, validate_only: bool = False,
                           internal: bool = False) -> CreatedTopic:
        """Create a topic; `internal` is for the broker's own topics (__consumer_offsets)."""
        topic_names.validate(new.name)
        if topic_names.is_internal(new.name) and not internal:
            from strom.protocol.errors import InvalidTopic
            raise InvalidTopic(f"Topic name {new.name} is reserved for internal use")
        existing = set(await self.store.get_children(model.TOPICS))
        if new.name in existing:
            raise TopicAlreadyExists(f"Topic '{new.name}' already exists.")
        topic_names.check_collision(new.name, existing)
        try:
            configs = validate_topic_configs(new.configs or {})
        except ConfigError as e:
            raise InvalidConfig(str(e)) from None
        assignment = self._plan_assignment(new)
        rf = len(next(iter(assignment.values())))
        created = CreatedTopic(new.name, uuid.uuid4(), len(assignment), rf,
                               {k: str(v) for k, v in (new.configs or {}).items()},
                               topic_names.collision_warning(new.name))
        if validate_only:
            return created
        del configs
        await self._write_topic(created.name, created.topic_id, assignment, created.configs)
        log.info("Created topic %s with %d partitions, replication factor %d", new.name,
                 created.num_partitions, rf)
        return created

    def _plan_assignment(self, new: NewTopic) -> dict[int, tuple[int, ...]]:
        brokers = self.live_brokers()
        if new.assignment:
            if new.num_partitions != -1 or new.replication_factor != -1:
                raise InvalidRequest("Both numPartitions or replicationFactor and "
                                     "replicasAssignments were set. Both cannot be used "
                                     "at the same time.")
            return self._check_assignment(new.assignment, 0)
        partitions = new.num_partitions if new.num_partitions != -1 else \
            self.config.get("num.partitions")
        rf = new.replication_factor if new.replication_factor != -1 else \
            self.config.get("default.replication.factor")
        if partitions <= 0:
            raise InvalidPartitions("Number of partitions must be larger than 0.")
        if rf <= 0:
            raise InvalidReplicationFactor("Replication factor must be larger than 0.")
        if rf > 32767:
            raise InvalidReplicationFactor("Replication factor must be at most 32767.")
        return self._place(brokers, partitions, rf)

    def _place(self, brokers: list[int], partitions: int, rf: int, start_partition: int = 0
               ) -> dict[int, tuple[int, ...]]:
        """Rack-aware placement when every broker has a rack (Kafka's "safe" mode), else
        rack-unaware."""
        racks = {b: self.cache.brokers[b].rack for b in brokers if b in self.cache.brokers}
        if racks and len(racks) == len(brokers) and all(racks.values()):
            return assign_replicas_rack_aware(racks, partitions, rf, start_partition)  # type: ignore[arg-type]
        return assign_replicas(brokers, partitions, rf, start_partition=start_partition)

    def _check_assignment(self, assignment: dict[int, tuple[int, ...]], first: int
                          ) -> dict[int, tuple[int, ...]]:
        brokers = set(self.live_brokers())
        if sorted(assignment) != list(range(first, first + len(assignment))):
            raise InvalidReplicaAssignment("Partitions must be numbered consecutively "
                                           f"from {first}.")
        sizes = {len(r) for r in assignment.values()}
        if len(sizes) != 1 or 0 in sizes:
            raise InvalidReplicaAssignment("All partitions must have the same, non-zero "
                                           "number of replicas.")
        for p, replicas in assignment.items():
            if len(set(replicas)) != len(replicas):
                raise InvalidReplicaAssignment(f"Duplicate replica in partition {p}: "
                                               f"{list(replicas)}")
            unknown = [b for b in replicas if b not in brokers]
            if unknown:
                raise InvalidReplicaAssignment(f"Unknown broker(s) {unknown} in the "
                                               f"assignment of partition {p}")
        return dict(assignment)

    async def _write_topic(self, name: str, topic_id: uuid.UUID,
                           assignment: dict[int, tuple[int, ...]], configs: dict[str, str]
                           ) -> None:
        """As Kafka: the configs (written over a leftover of an earlier topic of that name
        whose deletion or creation was cut short), then the assignment, then the states."""
        config_path = model.topic_config_path(name)
        try:
            await self.store.create(config_path, model.encode_topic_config(configs))
        except NodeExistsError:
            # a creator in progress writes the assignment right after the configs: give
            # it a moment before taking the configs for a leftover
            await asyncio.sleep(0.5)
            node = await self.store.get(config_path)
            if node is None or await self.store.exists(model.topic_path(name)):
                raise TopicAlreadyExists(f"Topic '{name}' already exists.") from None
            log.info("Replacing the configs left over from an earlier topic %s", name)
            try:
                await self.store.set(config_path, model.encode_topic_config(configs), node[1])
            except BadVersionError:  # another broker is creating it right now
                raise TopicAlreadyExists(f"Topic '{name}' already exists.") from None
        try:
            await self.store.create(model.topic_path(name),
                                    model.TopicAssignment(name, topic_id, assignment).to_json())
        except NodeExistsError:  # another broker created it meanwhile
            raise TopicAlreadyExists(f"Topic '{name}' already exists.") from None
        await self._write_partition_states(name, assignment)

    async def _write_partition_states(self, name: str, assignment: dict[int, tuple[int, ...]],
                                      live: set[int] | None = None) -> None:
        """Each partition's first state: the first live replica leads, the live replicas
        are the ISR. A state that exists already (the controller filled it in) is kept."""
        if live is None:
            live = set(self.live_brokers())

        async def write(p: int, replicas: tuple[int, ...]) -> None:
            isr = tuple(b for b in replicas if b in live)
            leader = isr[0] if isr else model.NO_LEADER
            state = model.PartitionState(leader, 0, isr, self.epoch)
            try:
                await self.store.create(model.partition_state_path(name, p), state.to_json())
            except NodeExistsError:
                pass

        # the first one alone (it creates the parent nodes), then the others concurrently:
        # ZooKeeper pipelines them and the local store writes them in one go, where one
        # write after the other took minutes for a few thousand partitions
        items = sorted(assignment.items())
        if items:
            await write(*items[0])
        for i in range(1, len(items), STATE_WRITES_AT_ONCE):
            await asyncio.gather(*(write(p, r) for p, r in items[i:i + STATE_WRITES_AT_ONCE]))

    async def delete_topic(self, name: str) -> uuid.UUID:
        topic = self.cache.topic(name)
        node = await self.store.get(model.topic_path(name))
        if node is None:
            raise UnknownTopicOrPartition(f"Topic '{name}' does not exist")
        if topic_names.is_internal(name):
            from strom.protocol.errors import InvalidTopic
            raise InvalidTopic(f"Internal topic {name} cannot be deleted")
        topic_id = model.TopicAssignment.from_json(name, node[0], node[1]).topic_id
        try:
            await self.store.delete(model.topic_path(name), recursive=True)
        except NoNodeError:
            pass
        try:
            await self.store.delete(model.topic_config_path(name))
        except NoNodeError:
            pass
        log.info("Deleted topic %s", name)
        del topic
        return topic_id

    async def create_partitions(self, name: str, count: int,
                                assignment: list[list[int]] | None,
                                validate_only: bool = False) -> None:
        node = await self.store.get(model.topic_path(name))
        if node is None:
            raise UnknownTopicOrPartition(f"Topic '{name}' does not exist")
        current = model.TopicAssignment.from_json(name, node[0], node[1])
        old = len(current.replicas)
        if count < old:
            raise InvalidPartitions(f"Topic currently has {old} partitions, which is higher "
                                    f"than the requested {count}.")
        if count == old:
            raise InvalidPartitions(f"Topic already has {old} partitions.")
        rf = len(current.replicas[0])
        if assignment is not None:
            if len(assignment) != count - old:
                raise InvalidReplicaAssignment(
                    f"Increasing the number of partitions by {count - old} but "
                    f"{len(assignment)} assignments provided.")
            added = self._check_assignment(
                {old + i: tuple(a) for i, a in enumerate(assignment)}, old)
            if len(next(iter(added.values()))) != rf:
                raise InvalidReplicaAssignment(
                    f"Inconsistent replication factor between partitions, partition 0 has "
                    f"{rf} while partitions [{old}] have replication factors "
                    f"[{len(next(iter(added.values())))}], respectively.")
        else:
            added = self._place(self.live_brokers(), count - old, rf, start_partition=old)
        if validate_only:
            return
        replicas = dict(current.replicas)
        replicas.update(added)
        new = dataclasses.replace(current, replicas=replicas)
        await self.store.set(model.topic_path(name), new.to_json(), current.version)
        await self._write_partition_states(name, added)
        log.info("Topic %s now has %d partitions", name, count)

    async def alter_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        try:
            validate_topic_configs(configs)
        except ConfigError as e:
            raise InvalidConfig(str(e)) from None
        await self.store.set(model.topic_config_path(name), model.encode_topic_config(configs))
