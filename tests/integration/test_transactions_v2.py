"""Transactions V2 (KIP-890 part 2) over the raw protocol (no installed client speaks it:
librdkafka 2.16, kafka-python 3.0 and aiokafka 0.14 stop at V1): ApiVersions advertises
`transaction.version` 2, Produce v12 to two partitions with no AddPartitionsToTxn (the
leader adds them), EndTxn v5 commit and abort each answering the bumped epoch, a retried
EndTxn v5 with the previous epoch, the old epoch fenced (EndTxn and Produce), the partition
producer state at the markers' epoch, and confluent-kafka read_committed consumers seeing
exactly the committed records; TxnOffsetCommit v5 with no AddOffsetsToTxn
(strom.testing.txn_v2)."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Consumer, TopicPartition

from strom.protocol.client import BrokerConnection
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, request_module
from strom.testing.kafka import create_topic
from strom.testing.txn_clients import read_to_end
from strom.testing.txn_v2 import (
    V2Producer,
    end_retrying,
    end_txn_v5,
    init_producer_id,
    req,
)

pytestmark = pytest.mark.timeout(90)
TXN_ID = "v2-txn"
GROUP = "v2-group"


@pytest.fixture(scope="module")
def broker_overrides():
    return {"transaction.state.log.num.partitions": 1, "offsets.topic.num.partitions": 1}


def end_txn(pid: int, epoch: int, commit: bool):
    return end_txn_v5(TXN_ID, pid, epoch, commit)


async def producer_epochs(conn: BrokerConnection, topic: str) -> dict[int, int]:
    mod = request_module(61, 0)
    r = await conn.request(req(61, 0, topics=(make(mod.TopicRequest, name=topic,
                                                   partition_indexes=(0, 1)),)))
    return {p.partition_index: max(s.producer_epoch for s in p.active_producers)
            for p in r.topics[0].partitions}


def test_transactions_v2_end_to_end(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, partitions=2)

    async def main():
        conn = BrokerConnection("127.0.0.1", module_broker.port)
        await conn.connect()
        try:
            versions = await conn.request(req(18, 3, client_software_name="strom-tests",
                                              client_software_version="1"))
            tv = {f.name: f for f in versions.finalized_features}["transaction.version"]
            assert (tv.min_version_level, tv.max_version_level) == (2, 2)
            supported = {f.name: f for f in versions.supported_features}
            assert supported["transaction.version"].max_version == 2
            maxes = {k.api_key: k.max_version for k in versions.api_keys}
            assert maxes[26] == 5 and maxes[0] == 12

            found = await conn.request(req(10, 4, key_type=1, coordinator_keys=(TXN_ID,)))
            assert found.coordinators[0].error_code == ErrorCode.none
            pid, e0 = await init_producer_id(conn, TXN_ID)
            p = V2Producer({0: conn, 1: conn}, TXN_ID, topic_name, pid, e0)

            # 1: commit, two partitions, no AddPartitionsToTxn
            assert await p.send(0, [b"c1-a", b"c1-b"]) == ErrorCode.none
            assert await p.send(1, [b"c1-c"]) == ErrorCode.none
            assert await p.send(1, [b"c1-d"]) == ErrorCode.none
            r = await conn.request(end_txn(pid, e0, True))
            assert (r.error_code, r.producer_id, r.producer_epoch) == (0, pid, e0 + 1)
            # the retry of that EndTxn (previous epoch) succeeds with the same answer
            r = await end_retrying(conn, TXN_ID, pid, e0, True)
            assert (r.error_code, r.producer_id, r.producer_epoch) == (0, pid, e0 + 1)
            p.bumped(pid, e0 + 1)

            # 2: abort at the bumped epoch; the old epoch is fenced on the partitions
            assert await p.send(0, [b"a2-a"]) == ErrorCode.none
            assert await p.send(1, [b"a2-b"]) == ErrorCode.none
            assert await p.send(0, [b"zombie"], epoch=e0) == ErrorCode.invalid_producer_epoch
            r = await conn.request(end_txn(pid, e0 + 1, False))
            assert (r.error_code, r.producer_id, r.producer_epoch) == (0, pid, e0 + 2)
            r = await end_retrying(conn, TXN_ID, pid, e0, False)
            assert r.error_code == ErrorCode.producer_fenced
            # a commit "retry" of the abort is not one
            r = await end_retrying(conn, TXN_ID, pid, e0 + 1, True)
            assert r.error_code == ErrorCode.invalid_txn_state
            p.bumped(pid, e0 + 2)

            # 3: commit again, with a group's offsets (TxnOffsetCommit v5, no AddOffsetsToTxn)
            assert await p.send(1, [b"c3-a"]) == ErrorCode.none
            assert await p.send(0, [b"c3-b"]) == ErrorCode.none
            g = await conn.request(req(10, 4, key_type=0, coordinator_keys=(GROUP,)))
            assert g.coordinators[0].error_code == ErrorCode.none
            mod = request_module(28, 5)
            r = await conn.request(req(
                28, 5, transactional_id=TXN_ID, group_id=GROUP, producer_id=pid,
                producer_epoch=e0 + 2, generation_id=-1, member_id="", group_instance_id=None,
                topics=(make(mod.TxnOffsetCommitRequestTopic, name=topic_name, partitions=(
                    make(mod.TxnOffsetCommitRequestPartition, partition_index=0,
                         committed_offset=42, committed_leader_epoch=-1,
                         committed_metadata=None),)),)))
            assert r.topics[0].partitions[0].error_code == ErrorCode.none
            r = await conn.request(end_txn(pid, e0 + 2, True))
            assert (r.error_code, r.producer_epoch) == (0, e0 + 3)

            # the markers carried the bumped epoch: each partition's producer is at e0 + 3
            deadline = asyncio.get_running_loop().time() + 20
            while await producer_epochs(conn, topic_name) != {0: e0 + 3, 1: e0 + 3}:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(main(), 60))
    committed = read_to_end(module_broker.bootstrap, topic_name, 2, True, timeout=20)
    assert sorted(committed) == sorted([b"c1-a", b"c1-b", b"c1-c", b"c1-d", b"c3-a", b"c3-b"])
    everything = read_to_end(module_broker.bootstrap, topic_name, 2, False, timeout=20)
    assert sorted(everything) == sorted(committed + [b"a2-a", b"a2-b"])
    consumer = Consumer({"bootstrap.servers": module_broker.bootstrap, "group.id": GROUP})
    try:
        [tp] = consumer.committed([TopicPartition(topic_name, 0)], timeout=20)
        assert tp.offset == 42
    finally:
        consumer.close()
