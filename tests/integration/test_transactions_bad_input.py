"""Bad input to the transaction coordinator (issue 12's list), each answered with Kafka's
code and no state changed: EndTxn with no transaction, stale epochs (PRODUCER_FENCED or
INVALID_PRODUCER_EPOCH by version), AddPartitionsToTxn for unknown topics, timeouts above
transaction.max.timeout.ms, a transactional produce to a partition not added (KIP-890
verification), a producer id the coordinator does not know, TxnOffsetCommit without
AddOffsetsToTxn; DescribeTransactions and ListTransactions answers. Requests are kio
entities sent with strom's BrokerConnection; Produce is struct-encoded
(strom.testing.wire)."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from strom.protocol.client import BrokerConnection
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, request_module, request_schema
from strom.testing.kafka import create_topic
from strom.testing.wire import KafkaSocket, Record, encode_record_batch, parse_produce, produce

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def broker_overrides():
    return {"transaction.state.log.num.partitions": 1, "offsets.topic.num.partitions": 1,
            "transaction.max.timeout.ms": 60000}


def req(key: int, version: int, **fields):
    return make(request_schema(key, version), **fields)


def init_pid(txn_id: str, timeout_ms: int = 30000, version: int = 4, **extra):
    return req(22, version, transactional_id=txn_id,
               transaction_timeout=datetime.timedelta(milliseconds=timeout_ms),
               producer_id=-1, producer_epoch=-1, **extra)


def add_partitions(txn_id: str, pid: int, epoch: int, topics: dict[str, list[int]],
                   version: int = 3):
    mod = request_module(24, version)
    return req(24, version, v3_and_below_transactional_id=txn_id,
               v3_and_below_producer_id=pid, v3_and_below_producer_epoch=epoch,
               v3_and_below_topics=tuple(make(mod.AddPartitionsToTxnTopic, name=t,
                                              partitions=tuple(ps))
                                         for t, ps in topics.items()))


def end_txn(txn_id: str, pid: int, epoch: int, commit: bool, version: int = 3):
    return req(26, version, transactional_id=txn_id, producer_id=pid, producer_epoch=epoch,
               committed=commit)


def codes_of(add_response) -> dict[tuple[str, int], int]:
    return {(t.name, p.partition_index): p.partition_error_code
            for t in add_response.results_by_topic_v3_and_below
            for p in t.results_by_partition}


def raw_produce(port: int, topic: str, txn_id: str, pid: int, epoch: int) -> int:
    sock = KafkaSocket("127.0.0.1", port)
    try:
        batch = encode_record_batch([Record(b"v", b"k")], producer_id=pid,
                                    producer_epoch=epoch, base_sequence=0, transactional=True)
        _, [res] = parse_produce(sock.roundtrip(produce(
            topic, 0, batch, version=8, acks=-1, correlation_id=7,
            transactional_id=txn_id)), 8)
        return res.error_code
    finally:
        sock.close()


def test_bad_transactional_requests(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, partitions=1)

    async def main():
        conn = BrokerConnection("127.0.0.1", module_broker.port)
        await conn.connect()
        try:
            # the coordinator (and __transaction_state) exist once asked for
            found = await conn.request(req(10, 4, key_type=1, coordinator_keys=("bad-1",)))
            assert found.coordinators[0].error_code == ErrorCode.none
            empty = await conn.request(req(10, 4, key_type=1, coordinator_keys=("",)))
            assert empty.coordinators[0].error_code == ErrorCode.invalid_request

            too_long = await conn.request(init_pid("bad-1", timeout_ms=60001))
            assert too_long.error_code == ErrorCode.invalid_transaction_timeout
            zero = await conn.request(init_pid("bad-1", timeout_ms=0))
            assert zero.error_code == ErrorCode.invalid_transaction_timeout
            r = await conn.request(init_pid("bad-1"))
            assert r.error_code == ErrorCode.none
            pid, epoch = r.producer_id, r.producer_epoch

            # EndTxn with no transaction open
            r = await conn.request(end_txn("bad-1", pid, epoch, True))
            assert r.error_code == ErrorCode.invalid_txn_state
            # unknown topics: nothing is added
            r = await conn.request(add_partitions("bad-1", pid, epoch,
                                                  {topic_name: [0], "no-such-topic": [0]}))
            assert codes_of(r) == {(topic_name, 0): ErrorCode.operation_not_attempted,
                                   ("no-such-topic", 0): ErrorCode.unknown_topic_or_partition}
            # a produce to a partition not added: KIP-890 verification refuses it
            assert raw_produce(module_broker.port, topic_name, "bad-1", pid, epoch) == \
                ErrorCode.invalid_txn_state
            # a producer id the coordinator never gave out
            assert raw_produce(module_broker.port, topic_name, "bad-1", pid + 1000, 0) == \
                ErrorCode.invalid_producer_id_mapping
            r = await conn.request(add_partitions("bad-1", pid + 1000, 0, {topic_name: [0]}))
            assert codes_of(r) == {(topic_name, 0): ErrorCode.invalid_producer_id_mapping}
            # TxnOffsetCommit before AddOffsetsToTxn
            g = await conn.request(req(10, 4, key_type=0, coordinator_keys=("bad-group",)))
            assert g.coordinators[0].error_code == ErrorCode.none
            mod = request_module(28, 3)
            r = await conn.request(req(
                28, 3, transactional_id="bad-1", group_id="bad-group", producer_id=pid,
                producer_epoch=epoch, generation_id=-1, member_id="", group_instance_id=None,
                topics=(make(mod.TxnOffsetCommitRequestTopic, name=topic_name, partitions=(
                    make(mod.TxnOffsetCommitRequestPartition, partition_index=0,
                         committed_offset=1, committed_leader_epoch=-1,
                         committed_metadata=None),)),)))
            assert r.topics[0].partitions[0].error_code == ErrorCode.invalid_txn_state

            # a newer producer fences this one: each version's code
            r = await conn.request(init_pid("bad-1"))
            assert (r.error_code, r.producer_epoch) == (ErrorCode.none, epoch + 1)
            r = await conn.request(add_partitions("bad-1", pid, epoch, {topic_name: [0]}))
            assert codes_of(r) == {(topic_name, 0): ErrorCode.producer_fenced}
            r = await conn.request(add_partitions("bad-1", pid, epoch, {topic_name: [0]},
                                                  version=1))
            assert codes_of(r) == {(topic_name, 0): ErrorCode.invalid_producer_epoch}
            r = await conn.request(end_txn("bad-1", pid, epoch, False, version=1))
            assert r.error_code == ErrorCode.invalid_producer_epoch
            r = await conn.request(end_txn("bad-1", pid, epoch, False))
            assert r.error_code == ErrorCode.producer_fenced

            # the current producer: add, produce, describe, list, commit
            epoch += 1
            r = await conn.request(add_partitions("bad-1", pid, epoch, {topic_name: [0]}))
            assert codes_of(r) == {(topic_name, 0): ErrorCode.none}
            assert raw_produce(module_broker.port, topic_name, "bad-1", pid, epoch) == 0
            d = await conn.request(req(65, 0, transactional_ids=("bad-1", "never-seen")))
            ok, missing = d.transaction_states
            assert (ok.error_code, ok.transaction_state, ok.producer_id,
                    ok.producer_epoch) == (ErrorCode.none, "Ongoing", pid, epoch)
            assert [(t.topic, t.partitions) for t in ok.topics] == [(topic_name, (0,))]
            assert missing.error_code == ErrorCode.transactional_id_not_found
            lst = await conn.request(req(66, 1, state_filters=("Ongoing", "Bogus"),
                                         producer_id_filters=(), duration_filter=-1))
            assert lst.unknown_state_filters == ("Bogus",)
            assert [(t.transactional_id, t.producer_id) for t in lst.transaction_states] == \
                [("bad-1", pid)]
            r = await conn.request(end_txn("bad-1", pid, epoch, True))
            assert r.error_code == ErrorCode.none
            # an abort after the commit was chosen
            r = await conn.request(end_txn("bad-1", pid, epoch, False))
            assert r.error_code in (ErrorCode.invalid_txn_state,)
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(main(), 60))
