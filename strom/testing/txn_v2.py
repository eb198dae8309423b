"""Raw-protocol Transactions V2 (KIP-890 part 2) for tests: no installed client speaks it
(librdkafka 2.16, kafka-python 3.0 and aiokafka 0.14 stop at V1). Requests are kio
entities on strom's BrokerConnection; batches come from `strom.testing.wire`
(struct-encoded, sharing no code with the broker)."""

from __future__ import annotations

import asyncio
import datetime

from strom.protocol.client import BrokerConnection
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, request_module, request_schema
from strom.testing.wire import Record, encode_record_batch

__all__ = ["V2Producer", "end_retrying", "end_txn_v5", "init_producer_id", "req"]


def req(key: int, version: int, **fields):
    return make(request_schema(key, version), **fields)


def end_txn_v5(txn_id: str, pid: int, epoch: int, commit: bool):
    return req(26, 5, transactional_id=txn_id, producer_id=pid, producer_epoch=epoch,
               committed=commit)


async def init_producer_id(conn: BrokerConnection, txn_id: str) -> tuple[int, int]:
    """InitProducerId v5 on `conn` (the coordinator), retried while it is not ready."""
    for _ in range(100):
        r = await conn.request(req(22, 5, transactional_id=txn_id,
                                   transaction_timeout=datetime.timedelta(seconds=30),
                                   producer_id=-1, producer_epoch=-1))
        if r.error_code not in (ErrorCode.coordinator_load_in_progress,
                                ErrorCode.concurrent_transactions,
                                ErrorCode.not_coordinator):
            break
        await asyncio.sleep(0.1)
    assert r.error_code == ErrorCode.none, r.error_code
    return r.producer_id, r.producer_epoch


async def end_retrying(conn: BrokerConnection, txn_id: str, pid: int, epoch: int,
                       commit: bool):
    """EndTxn v5 again while the previous one completes (CONCURRENT_TRANSACTIONS), as a
    client retries."""
    for _ in range(100):
        r = await conn.request(end_txn_v5(txn_id, pid, epoch, commit))
        if r.error_code != ErrorCode.concurrent_transactions:
            return r
        await asyncio.sleep(0.1)
    raise AssertionError("EndTxn stayed CONCURRENT_TRANSACTIONS")


class V2Producer:
    """Transactional batches with Produce v12 (no AddPartitionsToTxn), each sent on the
    connection to its partition's leader (`conns`: partition -> connection); sequences
    start at 0 per partition and epoch, as a V2 client restarts them after a bump."""

    def __init__(self, conns: dict[int, BrokerConnection], txn_id: str, topic: str,
                 pid: int, epoch: int) -> None:
        self.conns, self.txn_id, self.topic = conns, txn_id, topic
        self.pid, self.epoch = pid, epoch
        self.sequences: dict[int, int] = {}

    async def send(self, partition: int, values: list[bytes], epoch: int | None = None
                   ) -> int:
        """Produce v12 (acks=-1); the partition's error code. NOT_ENOUGH_REPLICAS (the
        coordinator cannot add yet: the previous transaction is completing) is retried,
        as a client does."""
        epoch = self.epoch if epoch is None else epoch
        seq = self.sequences.get(partition, 0)
        batch = encode_record_batch([Record(v, b"k") for v in values], producer_id=self.pid,
                                    producer_epoch=epoch, base_sequence=seq,
                                    transactional=True)
        mod = request_module(0, 12)
        for _ in range(100):
            r = await self.conns[partition].request(req(
                0, 12, transactional_id=self.txn_id, acks=-1,
                timeout=datetime.timedelta(seconds=10),
                topic_data=(make(mod.TopicProduceData, name=self.topic, partition_data=(
                    make(mod.PartitionProduceData, index=partition, records=batch),)),)))
            code = r.responses[0].partition_responses[0].error_code
            if code != ErrorCode.not_enough_replicas:
                break
            await asyncio.sleep(0.1)
        if code == ErrorCode.none:
            self.sequences[partition] = seq + len(values)
        return code

    def bumped(self, pid: int, epoch: int) -> None:
        """Go on with what EndTxn v5 answered."""
        self.pid, self.epoch, self.sequences = pid, epoch, {}
