"""confluent-kafka (librdkafka) against a real strom broker.

Clients run with their default settings except `bootstrap.servers` (and what a test is
about: a codec, acks, idempotence). Consumers are group-less (`assign()`): confluent-kafka
demands a `group.id` even then, and auto-commit is off because consumer groups are not part
of this suite.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from strom.testing.data import Got, check_read_back, normalize_headers, samples
from strom.testing.kafka import create_topic, wait_for_topic

pytestmark = pytest.mark.timeout(120)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def make_consumer(bootstrap: str, **conf) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": "strom-it-unused",
                     "enable.auto.commit": False, **conf})


def produce_samples(bootstrap: str, topic: str, recs, *, conf: dict | None = None,
                    partition: int | None = None, timeout: float = 30.0):
    """Produce, flush, and return {sample index: (partition, offset)}; fails on any error."""
    producer = Producer({"bootstrap.servers": bootstrap, **(conf or {})})
    acked: dict[int, tuple[int, int]] = {}
    errors: list = []

    def on_delivery(err, msg, idx):
        if err is not None:
            errors.append((idx, err))
        else:
            acked[idx] = (msg.partition(), msg.offset())

    for s in recs:
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(topic, value=s.value, key=s.key, headers=list(s.headers),
                         timestamp=s.timestamp,
                         on_delivery=lambda err, msg, idx=s.index: on_delivery(err, msg, idx),
                         **kwargs)
        producer.poll(0)
    left = producer.flush(timeout)
    assert left == 0, f"{left} messages not delivered within {timeout}s"
    assert not errors, f"delivery errors: {errors[:5]}"
    return acked


def read_partitions(bootstrap: str, topic: str, ends: dict[int, int],
                    starts: dict[int, int] | None = None, timeout: float = 30.0,
                    conf: dict | None = None) -> list[Got]:
    """Read each partition from `starts[p]` (default: beginning) up to offset `ends[p]`."""
    starts = starts or {}
    consumer = make_consumer(bootstrap, **(conf or {}))
    got: list[Got] = []
    try:
        consumer.assign([TopicPartition(topic, p, starts.get(p, OFFSET_BEGINNING))
                         for p in ends])
        remaining = {p for p, end in ends.items() if end > starts.get(p, 0)}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append(Got(msg.partition(), msg.offset(), msg.key(), msg.value(),
                           normalize_headers(msg.headers()), msg.timestamp()[1]))
            if msg.offset() + 1 >= ends[msg.partition()]:
                remaining.discard(msg.partition())
        assert not remaining, f"partitions {remaining} not read to the end in {timeout}s"
    finally:
        consumer.close()
    return got


def ends_of(acked: dict[int, tuple[int, int]], partitions: int) -> dict[int, int]:
    ends = dict.fromkeys(range(partitions), 0)
    for p, off in acked.values():
        ends[p] = max(ends[p], off + 1)
    return ends


@pytest.mark.parametrize("codec", CODECS)
def test_produce_and_read_back_keyed_records_with_headers(module_broker, topic_name, codec):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 3)
    recs = samples(40, tag=codec, null_header=True)
    conf = {} if codec == "none" else {"compression.type": codec}
    acked = produce_samples(bs, topic_name, recs, conf=conf)
    # the same key always lands in the same partition
    by_key: dict[bytes, set[int]] = {}
    for s in recs:
        by_key.setdefault(s.key, set()).add(acked[s.index][0])
    assert all(len(ps) == 1 for ps in by_key.values()), by_key
    got = read_partitions(bs, topic_name, ends_of(acked, 3))
    check_read_back(recs, acked, got)


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks_levels(module_broker, topic_name, acks):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1)
    recs = samples(20, tag=f"acks{acks}")
    acked = produce_samples(bs, topic_name, recs, conf={"acks": acks}, partition=0)
    if acks == "0":
        # acks=0 gets no offsets back (the client reports a negative offset); one producer
        # and one partition keep produce order, so the offsets are the indexes
        assert all(off is None or off < 0 for _, off in acked.values())
        acked = {s.index: (0, s.index) for s in recs}
    got = read_partitions(bs, topic_name, {0: len(recs)})
    check_read_back(recs, acked, got)


def test_read_from_a_given_offset(module_broker, topic_name):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1)
    recs = samples(25, tag="from-offset")
    acked = produce_samples(bs, topic_name, recs, partition=0)
    assert sorted(off for _, off in acked.values()) == list(range(25))
    got = read_partitions(bs, topic_name, {0: 25}, starts={0: 17})
    assert [g.offset for g in got] == list(range(17, 25))
    check_read_back(recs, acked, got, start_offsets={0: 17})


def test_offsets_for_times_and_read_from_timestamp(module_broker, topic_name):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 1)
    base = int(time.time() * 1000) - 3_600_000
    recs = samples(10, tag="ts", base_timestamp=base, timestamp_step=1000)
    acked = produce_samples(bs, topic_name, recs, partition=0)
    consumer = make_consumer(bs)
    try:
        cases = {
            base - 5: 0,            # before everything: the first offset
            base: 0,                # exact match
            base + 3000: 3,         # exact match
            base + 3500: 4,         # first record at or after the target
            base + 9000: 9,         # the last record
            base + 9001: -1,        # after everything: no offset (the end)
        }
        for ts, want in cases.items():
            [tp] = consumer.offsets_for_times([TopicPartition(topic_name, 0, ts)], timeout=10)
            assert tp.error is None, tp.error
            assert tp.offset == want, f"offsets_for_times({ts - base:+d} ms) = {tp.offset}, want {want}"
    finally:
        consumer.close()
    consumer = make_consumer(bs)
    try:
        [tp] = consumer.offsets_for_times([TopicPartition(topic_name, 0, base + 6200)],
                                          timeout=10)
    finally:
        consumer.close()
    got = read_partitions(bs, topic_name, {0: 10}, starts={0: tp.offset})
    assert [g.offset for g in got] == [7, 8, 9]
    check_read_back(recs, acked, got, start_offsets={0: 7})


def test_idempotent_producer_has_no_duplicates(module_broker, topic_name):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 3)
    recs = samples(300, tag="idem", null_value_every=0)
    acked = produce_samples(bs, topic_name, recs, conf={"enable.idempotence": True})
    offsets = {}
    for p, off in acked.values():
        offsets.setdefault(p, []).append(off)
    for p, offs in offsets.items():
        assert sorted(offs) == list(range(len(offs))), f"partition {p}: gaps or duplicates"
    got = read_partitions(bs, topic_name, ends_of(acked, 3))
    assert len(got) == 300
    assert len({g.value for g in got}) == 300
    check_read_back(recs, acked, got)


def test_list_offsets_earliest_latest_timestamp_and_max_timestamp(module_broker, topic_name):
    bs = module_broker.bootstrap
    create_topic(bs, topic_name, 2)
    base = int(time.time() * 1000) - 600_000
    # One batch per record (flush after each) so batch- and record-level answers agree.
    # Timestamps out of order: the largest one is at offset 2.
    deltas = [5000, 1000, 9000, 2000, 3000]
    producer = Producer({"bootstrap.servers": bs})
    for i, d in enumerate(deltas):
        producer.produce(topic_name, value=f"v{i}".encode(), key=b"k", partition=0,
                         timestamp=base + d)
        assert producer.flush(15) == 0
    admin = AdminClient({"bootstrap.servers": bs})
    tp0, tp1 = TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)

    def offset(tp, spec):
        res = admin.list_offsets({tp: spec}, request_timeout=15)[tp].result(timeout=15)
        return res.offset, res.timestamp

    assert offset(tp0, OffsetSpec.earliest())[0] == 0
    assert offset(tp0, OffsetSpec.latest())[0] == 5          # the high watermark: next offset
    assert offset(tp1, OffsetSpec.earliest())[0] == 0          # empty partition
    assert offset(tp1, OffsetSpec.latest())[0] == 0
    off, ts = offset(tp0, OffsetSpec.max_timestamp())
    assert (off, ts) == (2, base + 9000)
    assert offset(tp0, OffsetSpec.for_timestamp(base + 2500))[0] == 0  # first ts >= is offset 0
    assert offset(tp0, OffsetSpec.for_timestamp(base + 6000))[0] == 2
    assert offset(tp0, OffsetSpec.for_timestamp(base + 9500))[0] == -1

    consumer = make_consumer(bs)
    try:
        assert consumer.get_watermark_offsets(tp0, timeout=10) == (0, 5)
        assert consumer.get_watermark_offsets(tp1, timeout=10) == (0, 0)
    finally:
        consumer.close()


def test_metadata_auto_creates_topic_by_default(module_broker, topic_name):
    bs = module_broker.bootstrap
    producer = Producer({"bootstrap.servers": bs})
    results = []
    producer.produce(topic_name, value=b"first", key=b"k",
                     on_delivery=lambda err, msg: results.append((err, msg.partition(),
                                                                  msg.offset())))
    assert producer.flush(20) == 0
    assert results == [(None, 0, 0)]
    wait_for_topic(bs, topic_name, 1)  # num.partitions defaults to 1
    got = read_partitions(bs, topic_name, {0: 1})
    assert [(g.key, g.value) for g in got] == [(b"k", b"first")]


def test_auto_create_disabled_gives_unknown_topic(start_broker, topic_name):
    b = start_broker({"auto.create.topics.enable": "false"})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    md = admin.list_topics(topic=topic_name, timeout=10)
    t = md.topics[topic_name]
    assert t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, t.error
    assert topic_name not in admin.list_topics(timeout=10).topics

    producer = Producer({"bootstrap.servers": b.bootstrap, "message.timeout.ms": 3000})
    errs = []
    producer.produce(topic_name, value=b"x", on_delivery=lambda err, msg: errs.append(err))
    producer.flush(15)
    assert len(errs) == 1 and errs[0] is not None
    assert errs[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                              KafkaError._MSG_TIMED_OUT), errs[0]
    assert topic_name not in admin.list_topics(timeout=10).topics

    # explicit creation still works
    fs = admin.create_topics([NewTopic(topic_name, 1, 1)], operation_timeout=10)
    fs[topic_name].result(timeout=15)
    wait_for_topic(b.bootstrap, topic_name, 1)
