"""The Controller: the one broker that changes topic assignments and partition states.

It is written once against MetadataStore. A broker becomes controller by creating the
ephemeral `/controller` znode and bumping `/controller_epoch`; with the `local` store the
only broker always wins. Topic creation writes the topic's configs, then its assignment,
then each partition's state (leader = first live replica, epoch 0, ISR = live replicas).
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass

from strom.cluster import model, topic_names
from strom.cluster.metadata_cache import MetadataCache
from strom.cluster.store import MetadataStore, NodeExistsError, NoNodeError
from strom.config import BrokerConfig, ConfigError, validate_topic_configs
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

log = logging.getLogger(__name__)


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


def assign_replicas(brokers: list[int], num_partitions: int, replication_factor: int,
                    start_partition: int = 0, start_index: int | None = None,
                    shift: int | None = None) -> dict[int, tuple[int, ...]]:
    """Kafka's rack-unaware placement: leaders round-robin from a random start, followers
    at a shift that grows each time the partitions wrap around the brokers."""
    n = len(brokers)
    if replication_factor <= 0:
        raise InvalidReplicationFactor("Replication factor must be larger than 0.")
    if replication_factor > n:
        raise InvalidReplicationFactor(
            f"Replication factor: {replication_factor} larger than available brokers: {n}.")
    brokers = sorted(brokers)
    start = random.randrange(n) if start_index is None else start_index
    next_shift = random.randrange(n) if shift is None else shift
    out: dict[int, tuple[int, ...]] = {}
    for pid in range(start_partition, start_partition + num_partitions):
        if pid > 0 and pid % n == 0:
            next_shift += 1
        first = (pid + start) % n
        replicas = [brokers[first]]
        for j in range(replication_factor - 1):
            step = 1 + (next_shift + j) % (n - 1)
            replicas.append(brokers[(first + step) % n])
        out[pid] = tuple(replicas)
    return out


class Controller:
    def __init__(self, broker_id: int, store: MetadataStore, cache: MetadataCache,
                 config: BrokerConfig) -> None:
        self.broker_id = broker_id
        self.store = store
        self.cache = cache
        self.config = config
        self.epoch = 0
        self.active = False

    async def elect(self) -> bool:
        """Try to become controller; True if this broker now is."""
        data = json.dumps({"version": 2, "brokerid": self.broker_id,
                           "timestamp": str(int(time.time() * 1000))}).encode()
        try:
            await self.store.create(model.CONTROLLER, data, ephemeral=True)
        except NodeExistsError:
            return False
        node = await self.store.get(model.CONTROLLER_EPOCH)
        if node is None:
            self.epoch = 1
            await self.store.create(model.CONTROLLER_EPOCH, b"1")
        else:
            self.epoch = int(node[0] or b"0") + 1
            await self.store.set(model.CONTROLLER_EPOCH, str(self.epoch).encode(), node[1])
        self.active = True
        log.info("Broker %d is the controller (epoch %d)", self.broker_id, self.epoch)
        return True

    def _require_active(self) -> None:
        if not self.active:
            raise NotController("This broker is not the controller")

    def live_brokers(self) -> list[int]:
        return sorted(self.cache.brokers)

    # --- topics -------------------------------------------------------------------------
    async def create_topic(self, new: NewTopic, validate_only: bool = False,
                           internal: bool = False) -> CreatedTopic:
        """Create a topic; `internal` is for the broker's own topics (__consumer_offsets)."""
        self._require_active()
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
        return assign_replicas(brokers, partitions, rf)

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
        await self.store.create(model.topic_config_path(name),
                                model.encode_topic_config(configs))
        await self.store.create(model.topic_path(name),
                                model.TopicAssignment(name, topic_id, assignment).to_json())
        await self._write_partition_states(name, assignment)

    async def _write_partition_states(self, name: str, assignment: dict[int, tuple[int, ...]]
                                      ) -> None:
        live = set(self.live_brokers())
        for p, replicas in sorted(assignment.items()):
            isr = tuple(b for b in replicas if b in live)
            leader = isr[0] if isr else model.NO_LEADER
            state = model.PartitionState(leader, 0, isr, self.epoch)
            await self.store.create(model.partition_state_path(name, p), state.to_json())

    async def delete_topic(self, name: str) -> uuid.UUID:
        self._require_active()
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
        self._require_active()
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
            added = assign_replicas(self.live_brokers(), count - old, rf, start_partition=old)
        if validate_only:
            return
        replicas = dict(current.replicas)
        replicas.update(added)
        new = model.TopicAssignment(name, current.topic_id, replicas)
        await self.store.set(model.topic_path(name), new.to_json(), current.version)
        await self._write_partition_states(name, added)
        log.info("Topic %s now has %d partitions", name, count)

    async def alter_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        self._require_active()
        try:
            validate_topic_configs(configs)
        except ConfigError as e:
            raise InvalidConfig(str(e)) from None
        await self.store.set(model.topic_config_path(name), model.encode_topic_config(configs))
