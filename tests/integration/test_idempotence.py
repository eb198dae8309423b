"""Idempotent produce on the wire (issue point 2): InitProducerId, a retried batch is not
written twice, a sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch is fenced, and
the state survives a restart. Requests from `strom.testing.wire`; results read back with
confluent-kafka.
"""

from __future__ import annotations

import itertools

import pytest

from strom.testing.kafka import consume_partition, create_topic
from strom.testing.wire import (
    KafkaSocket,
    Record,
    encode_record_batch,
    init_producer_id_v1,
    parse_init_producer_id_v1,
    parse_produce,
    produce,
)

pytestmark = pytest.mark.timeout(90)

NONE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
DUPLICATE_SEQUENCE_NUMBER = 46
INVALID_PRODUCER_EPOCH = 47

_cid = itertools.count(20000)


class RawProducer:
    def __init__(self, broker, topic: str) -> None:
        self.sock = KafkaSocket("127.0.0.1", broker.port)
        self.topic = topic
        cid = next(_cid)
        got, err, self.pid, self.epoch = parse_init_producer_id_v1(
            self.sock.roundtrip(init_producer_id_v1(cid)))
        assert (got, err) == (cid, NONE)
        assert self.pid >= 0 and self.epoch >= 0

    def send(self, seq: int, values: list[bytes], *, epoch: int | None = None,
             pid: int | None = None):
        batch = encode_record_batch(
            [Record(v, b"k") for v in values],
            producer_id=self.pid if pid is None else pid,
            producer_epoch=self.epoch if epoch is None else epoch,
            base_sequence=seq)
        cid = next(_cid)
        got, [res] = parse_produce(self.sock.roundtrip(
            produce(self.topic, 0, batch, version=8, acks=-1, correlation_id=cid)), 8)
        assert got == cid
        return res

    def close(self) -> None:
        self.sock.close()


def stored_values(broker, topic: str, end: int) -> list[bytes]:
    return [m.value() for m in consume_partition(broker.bootstrap, topic, 0, end=end)]


def test_init_producer_id_gives_distinct_ids(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 1)
    a, b = RawProducer(module_broker, topic_name), RawProducer(module_broker, topic_name)
    try:
        assert a.pid != b.pid
    finally:
        a.close()
        b.close()


def test_retried_batch_is_not_written_twice(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 1)
    p = RawProducer(module_broker, topic_name)
    try:
        first = p.send(0, [b"a0", b"a1", b"a2"])
        assert (first.error_code, first.base_offset) == (NONE, 0)
        second = p.send(3, [b"b3", b"b4"])
        assert (second.error_code, second.base_offset) == (NONE, 3)
        # the client did not see the answer and retries both batches
        for seq, values, want_offset in ((0, [b"a0", b"a1", b"a2"], 0), (3, [b"b3", b"b4"], 3)):
            again = p.send(seq, values)
            assert again.error_code in (NONE, DUPLICATE_SEQUENCE_NUMBER), again
            if again.error_code == NONE:
                assert again.base_offset == want_offset, again
        nxt = p.send(5, [b"c5"])
        assert (nxt.error_code, nxt.base_offset) == (NONE, 5)
    finally:
        p.close()
    assert stored_values(module_broker, topic_name, 6) == [b"a0", b"a1", b"a2", b"b3", b"b4",
                                                          b"c5"]


def test_sequence_gap_is_out_of_order(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 1)
    p = RawProducer(module_broker, topic_name)
    try:
        assert p.send(0, [b"x0", b"x1"]).error_code == NONE
        gap = p.send(5, [b"x5"])  # expected 2
        assert gap.error_code == OUT_OF_ORDER_SEQUENCE_NUMBER, gap
        ok = p.send(2, [b"x2"])
        assert (ok.error_code, ok.base_offset) == (NONE, 2)
    finally:
        p.close()
    assert stored_values(module_broker, topic_name, 3) == [b"x0", b"x1", b"x2"]


def test_older_epoch_is_fenced(module_broker, topic_name):
    create_topic(module_broker.bootstrap, topic_name, 1)
    p = RawProducer(module_broker, topic_name)
    try:
        assert p.send(0, [b"e0-0", b"e0-1"]).error_code == NONE
        # an epoch bump restarts the sequence at 0
        bumped = p.send(0, [b"e1-0"], epoch=p.epoch + 1)
        assert (bumped.error_code, bumped.base_offset) == (NONE, 2), bumped
        stale = p.send(2, [b"stale"], epoch=p.epoch)
        assert stale.error_code == INVALID_PRODUCER_EPOCH, stale
    finally:
        p.close()
    assert stored_values(module_broker, topic_name, 3) == [b"e0-0", b"e0-1", b"e1-0"]


def test_producer_state_survives_restart(start_broker, topic_name):
    b = start_broker()
    create_topic(b.bootstrap, topic_name, 1)
    p = RawProducer(b, topic_name)
    pid, epoch = p.pid, p.epoch
    try:
        assert p.send(0, [b"r0", b"r1"]).error_code == NONE
    finally:
        p.close()
    b.stop()
    b.start()
    q = RawProducer(b, topic_name)  # a connection for the old producer id
    try:
        dup = q.send(0, [b"r0", b"r1"], pid=pid, epoch=epoch)
        assert dup.error_code in (NONE, DUPLICATE_SEQUENCE_NUMBER), dup
        if dup.error_code == NONE:
            assert dup.base_offset == 0
        nxt = q.send(2, [b"r2"], pid=pid, epoch=epoch)
        assert (nxt.error_code, nxt.base_offset) == (NONE, 2), nxt
    finally:
        q.close()
    assert stored_values(b, topic_name, 3) == [b"r0", b"r1", b"r2"]
