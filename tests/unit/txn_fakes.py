"""Fakes for unit tests of the transaction coordinator: a metadata cache holding
`__transaction_state` (and a data topic "t"), a replica manager whose appends go to real
partition logs, and a marker channel that records the markers and can hold them back."""

from __future__ import annotations

import asyncio
import itertools
import uuid

from strom.clock import ManualClock
from strom.cluster import model
from strom.config import BrokerConfig, TopicConfig
from strom.coordinator.transaction_coordinator import (
    TRANSACTION_STATE_TOPIC,
    TransactionCoordinator,
)
from strom.log.partition_log import PartitionLog
from strom.protocol.batch import read_header

BROKER = 1
TXN_PARTITIONS = 2


def topic(name: str, partitions: int, leader: int = BROKER) -> model.TopicInfo:
    return model.TopicInfo(name, uuid.uuid4(), {
        p: model.PartitionInfo(p, (BROKER,), model.PartitionState(leader, 0, (BROKER,)))
        for p in range(partitions)})


class FakeCache:
    def __init__(self) -> None:
        self.brokers = {BROKER: object()}
        self.topics = {TRANSACTION_STATE_TOPIC: topic(TRANSACTION_STATE_TOPIC, TXN_PARTITIONS),
                       "t": topic("t", 3)}

    def on_change(self, listener) -> None:
        pass

    def topic(self, name):
        return self.topics.get(name)

    def partition(self, name, p):
        t = self.topics.get(name)
        return t.partitions.get(p) if t else None


class FakeReplica:
    def __init__(self, plog: PartitionLog, leader_epoch: int = 0) -> None:
        self.log = plog
        self.leader_epoch = leader_epoch

    @property
    def high_watermark(self) -> int:
        return self.log.log_end_offset


class FakeReplicas:
    def __init__(self, logs: dict[int, PartitionLog]) -> None:
        self.partitions = {(TRANSACTION_STATE_TOPIC, p): FakeReplica(plog)
                           for p, plog in logs.items()}
        self.txn_verifier = None

    def append(self, topic_name, p, batch, acks, internal_topics_allowed=False):
        assert internal_topics_allowed
        data = bytearray(batch)
        return self.partitions[(topic_name, p)].log.append_as_leader(data, read_header(data), 0)

    async def wait_for_replication(self, *args) -> None:
        return None


class FakeMarkers:
    """Records each transaction's markers; while `hold` is set, writes wait for `release`."""

    def __init__(self) -> None:
        self.written: list[tuple[int, int, int, bool, frozenset]] = []
        self.hold = False
        self._released = asyncio.Event()

    def release(self) -> None:
        self._released.set()
        self._released = asyncio.Event()

    async def write(self, producer_id, producer_epoch, coordinator_epoch, commit, partitions):
        while self.hold:
            await self._released.wait()
        self.written.append((producer_id, producer_epoch, coordinator_epoch, commit,
                             frozenset(partitions)))

    async def close(self) -> None:
        pass


class TxnHarness:
    def __init__(self, tmp_path, **extra) -> None:
        self.clock = ManualClock()
        values = {"transaction.state.log.num.partitions": str(TXN_PARTITIONS)}
        values.update({k.replace("_", "."): str(v) for k, v in extra.items()})
        self.config = BrokerConfig(values)
        self.cache = FakeCache()
        topic_config = TopicConfig.of(self.config, {"cleanup.policy": "compact"})
        self.logs = {p: PartitionLog.open(str(tmp_path / f"{TRANSACTION_STATE_TOPIC}-{p}"),
                                          TRANSACTION_STATE_TOPIC, p, topic_config, self.clock)
                     for p in range(TXN_PARTITIONS)}
        self.pids = itertools.count(1000)
        self.markers = FakeMarkers()
        self.coordinator = self.new_coordinator()

    def new_coordinator(self, leader_epoch: int = 0) -> TransactionCoordinator:
        replicas = FakeReplicas(self.logs)
        for r in replicas.partitions.values():
            r.leader_epoch = leader_epoch

        async def new_pid() -> int:
            return next(self.pids)
        return TransactionCoordinator(BROKER, self.config, self.clock, self.cache, None,
                                      replicas, new_pid, self.markers)

    async def load(self, coordinator: TransactionCoordinator | None = None
                   ) -> TransactionCoordinator:
        coordinator = coordinator or self.coordinator
        coordinator._on_topics_changed({TRANSACTION_STATE_TOPIC})
        for _ in range(100):
            if all(not s.loading for s in coordinator.partitions.values()):
                break
            await asyncio.sleep(0)
        self.coordinator = coordinator
        return coordinator


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)
