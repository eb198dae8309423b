"""The internal topic a coordinator keeps its state in (`__consumer_offsets`,
`__transaction_state`): which partition a key belongs to, which broker leads it (the
key's coordinator), and the topic's creation on first use.

A key belongs to partition `abs(javaHash(key)) % partitions`, as in Kafka. The topic is
created compacted, with the replication factor capped at the live brokers; concurrent
first uses share one creation. Owned by the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from strom.cluster.controller import Controller, NewTopic
from strom.cluster.metadata_cache import MetadataCache
from strom.cluster.store import StoreError
from strom.protocol.errors import ErrorCode, KafkaError, kafka_error


def java_string_hash(s: str) -> int:
    """Java's String.hashCode over UTF-16 code units, as a signed 32-bit int."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


class InternalTopic:
    def __init__(self, name: str, cache: MetadataCache, controller: Controller | None,
                 partitions: int, new_topic: Callable[[int], NewTopic]) -> None:
        """`new_topic(replication_factor)` is the topic to create."""
        self.name = name
        self.cache = cache
        self.controller = controller
        self.configured_partitions = partitions
        self.new_topic = new_topic
        self._creating: asyncio.Task | None = None

    @property
    def num_partitions(self) -> int:
        info = self.cache.topic(self.name)
        if info is not None:
            return len(info.partitions)
        return self.configured_partitions

    def partition_for(self, key: str) -> int:
        return (java_string_hash(key) & 0x7FFFFFFF) % self.num_partitions

    async def find_coordinator(self, key: str) -> int:
        """The broker leading `key`'s partition; creates the topic on first use. Raises
        COORDINATOR_NOT_AVAILABLE while the partition has no live leader."""
        if self.cache.topic(self.name) is None:
            if self._creating is None or self._creating.done():
                self._creating = asyncio.get_running_loop().create_task(self._create())
            await asyncio.shield(self._creating)
        return self.coordinator_of(key)

    def coordinator_of(self, key: str) -> int:
        info = self.cache.partition(self.name, self.partition_for(key))
        if info is None or info.leader < 0 or info.leader not in self.cache.brokers:
            raise kafka_error(ErrorCode.coordinator_not_available,
                              "The coordinator is not available.")
        return info.leader

    async def append(self, replicas, partition: int, batch: bytes, timeout_ms: int) -> None:
        """Append a coordinator's batch as leader and wait until the ISR has it (acks=all,
        as Kafka's coordinators write). Raises the partition's KafkaError."""
        result = replicas.append(self.name, partition, batch, -1, internal_topics_allowed=True)
        await replicas.wait_for_replication(self.name, partition, result.last_offset + 1,
                                            timeout_ms)

    async def _create(self) -> None:
        assert self.controller is not None
        try:
            await self.controller.create_topic(
                self.new_topic(max(1, len(self.cache.brokers))), internal=True)
        except KafkaError as e:
            if e.code != ErrorCode.topic_already_exists:
                raise
        except StoreError as e:  # ZooKeeper did not answer: the client asks again
            raise kafka_error(ErrorCode.coordinator_not_available,
                              f"The coordinator is not available: {e}") from e
        try:
            await self.cache.refresh_now({self.name})
        except StoreError as e:
            raise kafka_error(ErrorCode.coordinator_not_available,
                              f"The coordinator is not available: {e}") from e
