"""ReplicaManager: the partitions this broker hosts, produce appends and fetch reads.

It follows the MetadataCache: when a topic's assignment or partition state names this
broker, the partition's log is opened (or created) and the replica becomes leader or
follower; when the topic disappears its logs are deleted.

Fetch long-polls park in a purgatory of futures keyed by partition: an append that moves a
high watermark wakes the parked fetches of that partition at once, so a waiting consumer
is answered as soon as data arrives, not when max_wait_ms expires. Owned by the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass

from strom.clock import Clock
from strom.cluster.metadata_cache import MetadataCache
from strom.config import BrokerConfig, TopicConfig
from strom.log.manager import LogManager
from strom.log.partition_log import AppendResult, ReadResult
from strom.log.validator import maybe_recompress, validate_batch
from strom.protocol.errors import (
    KafkaError,
    NotLeaderOrFollower,
    UnknownTopicOrPartition,
)
from strom.replication.partition import Partition

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class FetchPartitionRequest:
    topic: str
    partition: int
    fetch_offset: int
    max_bytes: int
    current_leader_epoch: int = -1


@dataclass(frozen=True, slots=True)
class FetchPartitionResult:
    topic: str
    partition: int
    error: KafkaError | None
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    read: ReadResult | None = None

    @property
    def size(self) -> int:
        return self.read.slice.size if self.read and self.read.slice else 0


class ReplicaManager:
    def __init__(self, broker_id: int, config: BrokerConfig, clock: Clock,
                 logs: LogManager, cache: MetadataCache) -> None:
        self.broker_id = broker_id
        self.config = config
        self.clock = clock
        self.logs = logs
        self.cache = cache
        self.partitions: dict[TopicPartition, Partition] = {}
        self._waiters: dict[TopicPartition, set[asyncio.Future]] = defaultdict(set)
        cache.on_change(self.on_topics_changed)

    # --- following metadata ---------------------------------------------------------------
    def topic_config(self, topic: str) -> TopicConfig:
        info = self.cache.topic(topic)
        return TopicConfig(self.config, _parse_overrides(info.configs if info else {}))

    def on_topics_changed(self, topics: set[str]) -> None:
        for name in topics:
            info = self.cache.topic(name)
            if info is None:
                self._remove_topic(name)
                continue
            config = self.topic_config(name)
            for p, pinfo in info.partitions.items():
                tp = (name, p)
                if self.broker_id not in pinfo.replicas:
                    if tp in self.partitions:
                        self.partitions.pop(tp)
                        self.logs.delete(name, p)
                    continue
                partition = self.partitions.get(tp)
                if partition is None:
                    plog = self.logs.get_or_create(name, p, config, info.topic_id)
                    partition = Partition(name, p, info.topic_id, plog, self.broker_id)
                    self.partitions[tp] = partition
                partition.log.config = config
                st = pinfo.state
                if st.leader == self.broker_id:
                    partition.make_leader(st.leader_epoch, pinfo.replicas, st.isr)
                else:
                    partition.make_follower(st.leader, st.leader_epoch, pinfo.replicas, st.isr)
                self._wake(tp)

    def _remove_topic(self, name: str) -> None:
        for tp in [tp for tp in self.partitions if tp[0] == name]:
            self.partitions.pop(tp)
            self.logs.delete(*tp)
            self._wake(tp)
        for tp in [tp for tp in self.logs.logs if tp[0] == name]:
            self.logs.delete(*tp)

    def get_partition(self, topic: str, partition: int) -> Partition:
        p = self.partitions.get((topic, partition))
        if p is None:
            if self.cache.partition(topic, partition) is not None:
                raise NotLeaderOrFollower(
                    f"Broker {self.broker_id} does not host {topic}-{partition}")
            raise UnknownTopicOrPartition(
                f"This server does not host this topic-partition: {topic}-{partition}")
        return p

    def leader_partition(self, topic: str, partition: int, epoch: int = -1) -> Partition:
        p = self.get_partition(topic, partition)
        p.check_leader(epoch)
        return p

    # --- produce --------------------------------------------------------------------------
    def append(self, topic: str, partition: int, data: bytes, acks: int) -> AppendResult:
        """Validate and append one partition's batch as leader (acks=all: the ISR here is
        this broker alone until replication lands, so the append completes at once)."""
        p = self.leader_partition(topic, partition)
        batch = bytearray(data)
        header = validate_batch(batch, p.log.config, self.clock.now_ms())
        batch, header = maybe_recompress(batch, header, p.log.config)
        result = p.append_as_leader(batch, header, acks)
        self._wake((topic, partition))
        return result

    # --- fetch ----------------------------------------------------------------------------
    def read_partition(self, req: FetchPartitionRequest, max_bytes: int, min_one: bool,
                       replica_id: int = -1) -> FetchPartitionResult:
        try:
            p = self.leader_partition(req.topic, req.partition, req.current_leader_epoch)
            plog = p.log
            max_offset = plog.log_end_offset if replica_id >= 0 else p.high_watermark
            read = plog.read(req.fetch_offset, min(max_bytes, req.max_bytes), max_offset,
                             min_one)
            return FetchPartitionResult(req.topic, req.partition, None, p.high_watermark,
                                        p.high_watermark, plog.log_start_offset, read)
        except KafkaError as e:
            p2 = self.partitions.get((req.topic, req.partition))
            hw = p2.high_watermark if p2 else -1
            start = p2.log.log_start_offset if p2 else -1
            return FetchPartitionResult(req.topic, req.partition, e, hw, hw, start)

    def read_all(self, requests: list[FetchPartitionRequest], max_bytes: int,
                 replica_id: int = -1) -> list[FetchPartitionResult]:
        results = []
        remaining = max_bytes
        for req in requests:
            r = self.read_partition(req, max(remaining, 0), min_one=not any(
                x.size for x in results), replica_id=replica_id)
            remaining -= r.size
            results.append(r)
        return results

    async def fetch(self, requests: list[FetchPartitionRequest], max_bytes: int,
                    min_bytes: int, max_wait_ms: int, replica_id: int = -1
                    ) -> list[FetchPartitionResult]:
        """Read now; if less than min_bytes is available and nothing failed, park until
        data arrives for one of the partitions or max_wait_ms passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_ms / 1000
        while True:
            results = self.read_all(requests, max_bytes, replica_id)
            total = sum(r.size for r in results)
            if total >= min_bytes or max_wait_ms <= 0 or any(r.error for r in results) \
                    or not requests:
                return results
            timeout = deadline - loop.time()
            if timeout <= 0:
                return results
            fut = loop.create_future()
            keys = [(r.topic, r.partition) for r in requests]
            for k in keys:
                self._waiters[k].add(fut)
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                return self.read_all(requests, max_bytes, replica_id)
            finally:
                for k in keys:
                    s = self._waiters.get(k)
                    if s is not None:
                        s.discard(fut)
                        if not s:
                            del self._waiters[k]

    def _wake(self, tp: TopicPartition) -> None:
        for fut in self._waiters.pop(tp, ()):
            if not fut.done():
                fut.set_result(None)


def _parse_overrides(configs: dict[str, str]) -> dict:
    from strom.config import validate_topic_configs

    return validate_topic_configs(configs)
