"""The partition side of transactions (issue 12) without a coordinator: transactional
batches written raw (`strom.testing.transactions`), ended with WriteTxnMarkers, read back by
real consumers with isolation.level read_committed and read_uncommitted. The brokers run
with transaction.partition.verification.enable=false (no coordinator knows these
transactions)."""

from __future__ import annotations

import os
import time

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from strom.testing.kafka import create_topic
from strom.testing.transactions import RawTxnProducer

pytestmark = pytest.mark.timeout(120)

# the raw producer writes transactions no coordinator knows of: verification (KIP-890,
# the coordinator's txn_verifier) is off, as a Kafka broker with this setting does
NO_VERIFICATION = {"transaction.partition.verification.enable": "false"}


@pytest.fixture(scope="module")
def broker_overrides() -> dict:
    return NO_VERIFICATION


NONE = 0
INVALID_PRODUCER_EPOCH = 47
INVALID_TXN_STATE = 48
TRANSACTION_COORDINATOR_FENCED = 52
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
PARTITION_EOF = -191


def read_to_eof(bootstrap: str, topic: str, partition: int, isolation: str,
                timeout: float = 30.0) -> list[tuple[int, bytes]]:
    """(offset, value) of every record a confluent-kafka consumer with `isolation` gets
    from offset 0 until it reports the partition's end (the LSO for read_committed)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": isolation})
    out = []
    try:
        c.assign([TopicPartition(topic, partition, 0)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == PARTITION_EOF:
                    return out
                raise KafkaException(msg.error())
            out.append((msg.offset(), msg.value()))
        raise TimeoutError(f"no end of {topic}-{partition} after {out}")
    finally:
        c.close()


def test_read_committed_skips_aborted_and_stops_at_the_lso(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 1)
    p = RawTxnProducer(module_broker.port)
    try:
        assert p.send(topic_name, 0, [b"c1", b"c2"]).error_code == NONE
        assert p.commit() == {(topic_name, 0): NONE}
        assert p.send(topic_name, 0, [b"a1", b"a2", b"a3"]).error_code == NONE
        assert p.abort() == {(topic_name, 0): NONE}
        assert p.send(topic_name, 0, [b"c3"]).error_code == NONE
        assert p.commit() == {(topic_name, 0): NONE}
        # an open transaction: read_committed stops before it
        assert p.send(topic_name, 0, [b"open1"]).error_code == NONE
        committed = read_to_eof(module_broker.bootstrap, topic_name, 0, "read_committed")
        assert [v for _, v in committed] == [b"c1", b"c2", b"c3"]
        everything = read_to_eof(module_broker.bootstrap, topic_name, 0, "read_uncommitted")
        assert [v for _, v in everything] == [b"c1", b"c2", b"a1", b"a2", b"a3", b"c3",
                                              b"open1"]
        # a plain batch from a producer inside a transaction is refused
        plain = p.send(topic_name, 0, [b"x"], transactional=False)
        assert plain.error_code == INVALID_TXN_STATE, plain
        assert p.commit() == {(topic_name, 0): NONE}
        committed = read_to_eof(module_broker.bootstrap, topic_name, 0, "read_committed")
        assert [v for _, v in committed] == [b"c1", b"c2", b"c3", b"open1"]
    finally:
        p.close()


def test_markers_and_batches_answer_kafkas_codes(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 1)
    p = RawTxnProducer(module_broker.port)
    try:
        assert p.send(topic_name, 0, [b"v"], epoch=p.epoch + 1).error_code == NONE
        p.epoch += 1
        stale = p.send(topic_name, 0, [b"w"], epoch=p.epoch - 1)
        assert stale.error_code == INVALID_PRODUCER_EPOCH, stale
        assert p.commit(epoch=p.epoch - 1, partitions={topic_name: [0]}) == {
            (topic_name, 0): INVALID_PRODUCER_EPOCH}
        assert p.commit(coordinator_epoch=5) == {(topic_name, 0): NONE}
        assert p.send(topic_name, 0, [b"y"]).error_code == NONE
        assert p.abort(coordinator_epoch=4) == {(topic_name, 0): TRANSACTION_COORDINATOR_FENCED}
        assert p.abort(coordinator_epoch=5) == {(topic_name, 0): NONE}
        assert p.commit(partitions={"no-such-topic": [0]}) == {("no-such-topic", 0): 3}
        # a transactional batch without the request's transactional id
        p.transactional_id = None
        bad = p.send(topic_name, 0, [b"z"])
        assert bad.error_code == TRANSACTIONAL_ID_AUTHORIZATION_FAILED, bad
    finally:
        p.close()
    values = [v for _, v in read_to_eof(module_broker.bootstrap, topic_name, 0,
                                        "read_committed")]
    assert values == [b"v"]


def kafka_python_read(bootstrap: str, topic: str, isolation: str) -> tuple[list[bytes], int]:
    """(values, end offset) as kafka-python's consumer with `isolation` sees them."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    tp = KTP(topic, 0)
    c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                      enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        c.assign([tp])
        c.seek(tp, 0)
        end = c.end_offsets([tp])[tp]
        values = []
        deadline = time.monotonic() + 30
        while c.position(tp) < end and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                values += [r.value for r in records]
        return values, end
    finally:
        c.close()


def aiokafka_read(bootstrap: str, topic: str, isolation: str) -> tuple[list[bytes], int]:
    import asyncio

    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATP

    async def run():
        tp = ATP(topic, 0)
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                             enable_auto_commit=False)
        await c.start()
        try:
            c.assign([tp])
            c.seek(tp, 0)
            end = (await c.end_offsets([tp]))[tp]
            values = []
            async with asyncio.timeout(30):
                while await c.position(tp) < end:
                    batch = await c.getmany(tp, timeout_ms=500)
                    values += [r.value for r in batch.get(tp, [])]
            return values, end
        finally:
            await c.stop()

    return asyncio.run(run())


def test_kafka_python_and_aiokafka_read_committed(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 1)
    p = RawTxnProducer(module_broker.port)
    try:
        p.send(topic_name, 0, [b"c1"])
        p.commit()
        p.send(topic_name, 0, [b"a1", b"a2"])
        p.abort()
        p.send(topic_name, 0, [b"c2"])
        p.commit()
        p.send(topic_name, 0, [b"open"])  # offset 7: the LSO
    finally:
        p.close()
    for read in (kafka_python_read, aiokafka_read):
        assert read(module_broker.bootstrap, topic_name, "read_committed") == (
            [b"c1", b"c2"], 7), read
        assert read(module_broker.bootstrap, topic_name, "read_uncommitted") == (
            [b"c1", b"a1", b"a2", b"c2", b"open"], 8), read


def test_kill_9_with_an_open_transaction_restores_the_exact_state(start_broker, topic_name):
    b = start_broker({"log.segment.bytes": 2000, **NO_VERIFICATION})
    create_topic(b.bootstrap, topic_name, 1)
    p = RawTxnProducer(b.port, "crash")
    q = RawTxnProducer(b.port, "other")
    try:
        p.send(topic_name, 0, [b"open-0"])
        for i in range(12):  # several segments (snapshots at each roll)
            q.send(topic_name, 0, [b"q%d-%d" % (i, j) for j in range(5)])
            (q.commit if i % 3 else q.abort)()
        p.send(topic_name, 0, [b"open-1"])
    finally:
        q.close()
        p.close()
    before = {iso: read_to_eof(b.bootstrap, topic_name, 0, iso)
              for iso in ("read_committed", "read_uncommitted")}
    assert before["read_committed"] == []  # the open transaction starts at offset 0
    end_before = kafka_python_read(b.bootstrap, topic_name, "read_committed")[1]
    assert end_before == 0
    files = os.listdir(b.log_dir / f"{topic_name}-0")
    assert any(n.endswith(".snapshot") for n in files)
    assert any(n.endswith(".txnindex") for n in files)
    b.kill()
    b.start()
    for iso, want in before.items():
        assert read_to_eof(b.bootstrap, topic_name, 0, iso) == want, iso
    # the open transaction is still open after the restart: its COMMIT shows all of it
    p = RawTxnProducer(b.port, "crash-again")
    try:
        p.producer_id, p.epoch = _first_producer(before["read_uncommitted"], b, topic_name)
        assert p.commit(partitions={topic_name: [0]}) == {(topic_name, 0): NONE}
    finally:
        p.close()
    committed = [v for _, v in read_to_eof(b.bootstrap, topic_name, 0, "read_committed")]
    want = [v for _, v in before["read_uncommitted"]
            if v.startswith(b"open") or not _aborted_q(v)]
    assert committed == want


def _aborted_q(value: bytes) -> bool:
    """q's transactions 0, 3, 6, 9 were aborted."""
    return int(value[1:].split(b"-")[0]) % 3 == 0


def _first_producer(_records, broker, topic: str) -> tuple[int, int]:
    """The producer id and epoch of the partition's first batch (the open transaction's)."""
    from strom.testing.wire import KafkaSocket, fetch_v4, parse_fetch_v4, split_batches

    sock = KafkaSocket("127.0.0.1", broker.port)
    try:
        _, [res] = parse_fetch_v4(sock.roundtrip(fetch_v4(topic, 0, 0)))
    finally:
        sock.close()
    batches, _ = split_batches(res.records)
    raw = batches[0][2]
    return int.from_bytes(raw[43:51], "big", signed=True), \
        int.from_bytes(raw[51:53], "big", signed=True)


def test_describe_producers_lists_open_transactions(module_broker, topic_name):
    import asyncio

    from strom.protocol.client import BrokerConnection
    from strom.protocol.messages import make, request_module, request_schema

    create_topic(module_broker.bootstrap, topic_name, 1)
    p = RawTxnProducer(module_broker.port)
    try:
        p.send(topic_name, 0, [b"x", b"y"])
        p.commit(coordinator_epoch=3)
        p.send(topic_name, 0, [b"z"])  # offset 3: open
    finally:
        p.close()

    async def describe(topic):
        mod = request_module(61, 0)
        conn = BrokerConnection("127.0.0.1", module_broker.port)
        await conn.connect()
        try:
            return await conn.request(make(request_schema(61, 0), topics=(
                make(mod.TopicRequest, name=topic, partition_indexes=(0, 1)),)))
        finally:
            await conn.close()

    [topic] = asyncio.run(describe(topic_name)).topics
    ok, missing = topic.partitions
    assert (ok.error_code, missing.error_code) == (NONE, 3)
    [state] = ok.active_producers
    assert (state.producer_id, state.producer_epoch, state.last_sequence,
            state.coordinator_epoch, state.current_txn_start_offset) == (
        p.producer_id, p.epoch, 2, 3, 3)
