"""The partition side of transactions (issue 12) without a coordinator: transactional
batches written raw (`strom.testing.transactions`), ended with WriteTxnMarkers, read back by
real consumers with isolation.level read_committed and read_uncommitted."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from strom.testing.kafka import create_topic
from strom.testing.transactions import RawTxnProducer

pytestmark = pytest.mark.timeout(120)

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
