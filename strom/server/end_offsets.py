"""The high watermarks of partitions this broker does not host, for consumer lag.

The coordinator of a group emits its lag (kafka_exporter's `kafka_consumergroup_lag`), and
lag needs each partition's end offset. For the partitions it leads or follows the broker
knows it; for the others, before a scrape, it asks each of their leaders with one
ListOffsets (latest, read_uncommitted: the high watermark) per leader, as kafka_exporter
asks the cluster. Answers are kept until the next scrape asks again, so a leader that does
not answer in time (TIMEOUT_S) leaves the last known figure, and a partition never asked
about has no lag series. Connections to the leaders stay open between scrapes, on the
inter-broker listener.

Owned by the event loop; one refresh at a time (the endpoint renders one scrape at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

from strom.protocol.client import BrokerConnection, BrokerConnectionError
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, request_module, request_schema

log = logging.getLogger(__name__)

LIST_OFFSETS = 2
LIST_OFFSETS_VERSION = 7
LATEST = -1  # ListOffsets' timestamp for the end offset
TIMEOUT_S = 2.0


class RemoteEndOffsets:
    def __init__(self, broker_id: int, cache: Any, listener: str) -> None:
        self.broker_id = broker_id
        self.cache = cache  # the MetadataCache: leaders and their endpoints
        self.listener = listener
        self.ends: dict[tuple[str, int], int] = {}
        self._conns: dict[int, BrokerConnection] = {}

    async def refresh(self, wanted: set[tuple[str, int]]) -> None:
        """Ask the leaders of `wanted` for their high watermarks (bounded by TIMEOUT_S)."""
        self.ends = {tp: end for tp, end in self.ends.items() if tp in wanted}
        by_leader: dict[int, list[tuple[str, int]]] = defaultdict(list)
        for topic, index in wanted:
            info = self.cache.partition(topic, index)
            if info is not None and info.leader >= 0 and info.leader != self.broker_id:
                by_leader[info.leader].append((topic, index))
        for broker_id in [b for b in self._conns if b not in by_leader]:
            await self._drop(broker_id)
        if by_leader:
            await asyncio.gather(*(self._ask(b, tps) for b, tps in by_leader.items()))

    async def _ask(self, broker_id: int, partitions: list[tuple[str, int]]) -> None:
        mod = request_module(LIST_OFFSETS, LIST_OFFSETS_VERSION)
        topics: dict[str, list] = defaultdict(list)
        for topic, index in partitions:
            topics[topic].append(make(mod.ListOffsetsPartition, partition_index=index,
                                      current_leader_epoch=-1, timestamp=LATEST))
        request = make(request_schema(LIST_OFFSETS, LIST_OFFSETS_VERSION), replica_id=-1,
                       isolation_level=0, topics=tuple(
                           make(mod.ListOffsetsTopic, name=name, partitions=tuple(parts))
                           for name, parts in topics.items()))
        try:
            conn = await self._connection(broker_id)
            async with asyncio.timeout(TIMEOUT_S):
                response = await conn.request(request)
        except (BrokerConnectionError, TimeoutError, ConnectionError) as e:
            log.debug("End offsets from broker %d not read: %s", broker_id, e)
            await self._drop(broker_id)
            return
        for topic in response.topics:
            for p in topic.partitions:
                if p.error_code == ErrorCode.none:
                    self.ends[(topic.name, p.partition_index)] = p.offset

    async def _connection(self, broker_id: int) -> BrokerConnection:
        conn = self._conns.get(broker_id)
        if conn is not None and not conn.closed:
            return conn
        endpoint = self.cache.endpoint(broker_id, self.listener)
        if endpoint is None:
            raise ConnectionError(f"broker {broker_id} is not registered")
        conn = BrokerConnection(endpoint.host, endpoint.port,
                                client_id=f"strom-metrics-{self.broker_id}",
                                timeout_s=TIMEOUT_S)
        await conn.connect()
        self._conns[broker_id] = conn
        return conn

    async def _drop(self, broker_id: int) -> None:
        conn = self._conns.pop(broker_id, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        for broker_id in list(self._conns):
            await self._drop(broker_id)
