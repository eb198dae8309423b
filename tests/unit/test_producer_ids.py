"""ProducerIdManager: blocks claimed from the store, and what InitProducerId gets when the
store does not answer."""

from __future__ import annotations

import asyncio

import pytest

from strom.cluster.local_store import LocalMetadataStore
from strom.cluster.store import StoreError
from strom.coordinator.producer_ids import BLOCK_SIZE, ProducerIdManager
from strom.protocol.errors import ErrorCode, KafkaError


def test_two_brokers_never_share_an_id(tmp_path):
    async def main():
        store = LocalMetadataStore(str(tmp_path))
        await store.start()
        try:
            a, b = ProducerIdManager(1, store), ProducerIdManager(2, store)
            ids = [await a.generate(), await b.generate(), await a.generate()]
            assert ids == [0, BLOCK_SIZE, 1]
        finally:
            await store.close()
    asyncio.run(main())


class _DownStore:
    async def get(self, path):
        raise StoreError(f"zookeeper get {path}: ConnectionLoss")


def test_a_store_that_does_not_answer_is_a_retriable_error():
    async def main():
        manager = ProducerIdManager(1, _DownStore())  # type: ignore[arg-type]
        with pytest.raises(KafkaError) as info:
            await manager.generate()
        assert info.value.code == ErrorCode.coordinator_load_in_progress
        assert "ConnectionLoss" in info.value.message
    asyncio.run(main())
