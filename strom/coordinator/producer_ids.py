"""ProducerIdManager: hands out producer ids for idempotent producers.

Ids are claimed in blocks from the znode `/latest_producer_id_block` (as Kafka did on
ZooKeeper) with compare-and-set, so brokers sharing a store never hand out the same id:
    {"version":1,"broker":1,"block_start":"0","block_end":"999"}
Owned by the event loop; `generate` is serialized by a lock. While the store does not
answer, `generate` raises COORDINATOR_LOAD_IN_PROGRESS (clients retry InitProducerId).
"""

from __future__ import annotations

import asyncio
import json

from strom.cluster.store import BadVersionError, MetadataStore, NodeExistsError, StoreError
from strom.protocol.errors import ErrorCode, kafka_error

PRODUCER_ID_BLOCK = "/latest_producer_id_block"
BLOCK_SIZE = 1000


class ProducerIdManager:
    def __init__(self, broker_id: int, store: MetadataStore) -> None:
        self.broker_id = broker_id
        self.store = store
        self._next = 0
        self._end = -1  # inclusive end of the current block
        self._lock = asyncio.Lock()

    async def generate(self) -> int:
        """The next producer id. While no block can be claimed (the store does not answer)
        COORDINATOR_LOAD_IN_PROGRESS, retriable, as Kafka's manager answers while it has
        no block."""
        async with self._lock:
            if self._next > self._end:
                try:
                    await self._claim_block()
                except StoreError as e:
                    raise kafka_error(ErrorCode.coordinator_load_in_progress,
                                      f"Producer ID block is not available yet: {e}") from e
            pid = self._next
            self._next += 1
            return pid

    async def _claim_block(self) -> None:
        for _ in range(100):
            node = await self.store.get(PRODUCER_ID_BLOCK)
            start = 0
            if node is not None and node[0]:
                start = int(json.loads(node[0])["block_end"]) + 1
            data = json.dumps({"version": 1, "broker": self.broker_id,
                               "block_start": str(start),
                               "block_end": str(start + BLOCK_SIZE - 1)}).encode()
            try:
                if node is None:
                    await self.store.create(PRODUCER_ID_BLOCK, data)
                else:
                    await self.store.set(PRODUCER_ID_BLOCK, data, node[1])
            except (BadVersionError, NodeExistsError):
                continue
            self._next, self._end = start, start + BLOCK_SIZE - 1
            return
        raise StoreError("Could not claim a producer id block in 100 tries")
