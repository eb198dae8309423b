"""kafka-python against a real strom broker, with default client settings except
`bootstrap_servers` (and what a test is about). kafka-python 3.x is idempotent by default.

kafka-python compresses with python-snappy, lz4 and zstandard; codecs whose library is not
installed are skipped (kafka.codec.has_*()).
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import codec as kcodec
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions

from strom.testing.data import Got, check_read_back, normalize_headers, samples
from strom.testing.kafka import wait_for_topic

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

_CODEC_AVAILABLE = {
    None: True,
    "gzip": kcodec.has_gzip(),
    "snappy": kcodec.has_snappy(),
    "lz4": kcodec.has_lz4(),
    "zstd": kcodec.has_zstd(),
}
_CODEC_LIBRARY = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}


def codec_param(codec):
    marks = []
    if not _CODEC_AVAILABLE[codec]:
        marks.append(pytest.mark.skip(
            reason=f"kafka-python needs the '{_CODEC_LIBRARY[codec]}' package for {codec}, "
                   "and it is not installed"))
    return pytest.param(codec, id=codec or "none", marks=marks)


def create_topics(bootstrap: str, *topics: tuple[str, int]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({name: {"num_partitions": n, "replication_factor": 1}
                             for name, n in topics})
    finally:
        admin.close()
    for name, n in topics:
        wait_for_topic(bootstrap, name, n)


def produce(bootstrap: str, topic: str, recs, *, partition: int | None = None,
            **conf) -> dict[int, tuple[int, int]]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, **conf)
    try:
        futures = [
            (s.index, producer.send(topic, value=s.value, key=s.key, headers=list(s.headers),
                                    timestamp_ms=s.timestamp, partition=partition))
            for s in recs
        ]
        producer.flush(timeout=30)
        acked = {}
        for idx, fut in futures:
            md = fut.get(timeout=30)
            acked[idx] = (md.partition, md.offset)
        return acked
    finally:
        producer.close(timeout=10)


def read(bootstrap: str, topic: str, ends: dict[int, int], starts: dict[int, int] | None = None,
         timeout: float = 30.0) -> list[Got]:
    starts = starts or {}
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    got: list[Got] = []
    try:
        tps = {p: TopicPartition(topic, p) for p in ends}
        consumer.assign(list(tps.values()))
        for p, tp in tps.items():
            if p in starts:
                consumer.seek(tp, starts[p])
            else:
                consumer.seek_to_beginning(tp)
        remaining = {p for p, end in ends.items() if end > starts.get(p, 0)}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    got.append(Got(tp.partition, r.offset, r.key, r.value,
                                   normalize_headers(r.headers), r.timestamp))
                    if r.offset + 1 >= ends[tp.partition]:
                        remaining.discard(tp.partition)
        assert not remaining, f"partitions {remaining} not read to the end in {timeout}s"
    finally:
        consumer.close()
    return got


def ends_of(acked, partitions):
    ends = dict.fromkeys(range(partitions), 0)
    for p, off in acked.values():
        ends[p] = max(ends[p], off + 1)
    return ends


@pytest.mark.parametrize("codec", [codec_param(c) for c in _CODEC_AVAILABLE])
def test_produce_and_read_back_keyed_records_with_headers(module_broker, topic_name, codec):
    bs = module_broker.bootstrap
    create_topics(bs, (topic_name, 3))
    recs = samples(40, tag=str(codec))
    conf = {"compression_type": codec} if codec else {}
    acked = produce(bs, topic_name, recs, **conf)
    got = read(bs, topic_name, ends_of(acked, 3))
    check_read_back(recs, acked, got)


def test_read_from_a_given_offset(module_broker, topic_name):
    bs = module_broker.bootstrap
    create_topics(bs, (topic_name, 1))
    recs = samples(20, tag="kp-offset")
    acked = produce(bs, topic_name, recs, partition=0)
    got = read(bs, topic_name, {0: 20}, starts={0: 12})
    assert [g.offset for g in got] == list(range(12, 20))
    check_read_back(recs, acked, got, start_offsets={0: 12})


def test_offsets_for_times_and_end_offsets(module_broker, topic_name):
    bs = module_broker.bootstrap
    create_topics(bs, (topic_name, 1))
    base = int(time.time() * 1000) - 3_600_000
    recs = samples(10, tag="kp-ts", base_timestamp=base, timestamp_step=1000)
    acked = produce(bs, topic_name, recs, partition=0)
    tp = TopicPartition(topic_name, 0)
    consumer = KafkaConsumer(bootstrap_servers=bs)
    try:
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 10}
        found = consumer.offsets_for_times({tp: base + 4500})[tp]
        assert found is not None and (found.offset, found.timestamp) == (5, base + 5000)
        assert consumer.offsets_for_times({tp: base})[tp].offset == 0
        assert consumer.offsets_for_times({tp: base + 20_000})[tp] is None
    finally:
        consumer.close()
    got = read(bs, topic_name, {0: 10}, starts={0: found.offset})
    check_read_back(recs, acked, got, start_offsets={0: 5})


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
def test_idempotence_setting(module_broker, topic_name, idempotent):
    bs = module_broker.bootstrap
    create_topics(bs, (topic_name, 2))
    recs = samples(150, tag="kp-idem", null_value_every=0)
    acked = produce(bs, topic_name, recs, enable_idempotence=idempotent)
    got = read(bs, topic_name, ends_of(acked, 2))
    assert len(got) == 150 and len({g.value for g in got}) == 150
    check_read_back(recs, acked, got)


def test_admin_client(module_broker, topic_name):
    """kafka-python's own admin requests (its parser is strict about field layouts)."""
    bs = module_broker.bootstrap
    admin = KafkaAdminClient(bootstrap_servers=bs)
    try:
        admin.create_topics({topic_name: {"num_partitions": 2, "replication_factor": 1,
                                          "configs": {"retention.ms": "86400000"}}})
        wait_for_topic(bs, topic_name, 2)
        assert topic_name in admin.list_topics()
        cluster = admin.describe_cluster()
        assert [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]] == [
            (1, "127.0.0.1", module_broker.port)]
        assert cluster["controller_id"] == 1
        [desc] = admin.describe_topics([topic_name])
        assert desc["error_code"] == 0
        assert sorted(p["partition_index"] for p in desc["partitions"]) == [0, 1]
        assert all(p["leader_id"] == 1 and p["replica_nodes"] == [1]
                   for p in desc["partitions"])

        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic_name)])
        entry = res["topic"][topic_name].get("retention.ms")  # filter: non-default values
        assert entry is not None and "86400000" in repr(entry), res

        admin.create_partitions({topic_name: NewPartitions(total_count=4)})
        wait_for_topic(bs, topic_name, 4)

        admin.delete_topics([topic_name])
        deadline = time.monotonic() + 15
        while topic_name in admin.list_topics():
            assert time.monotonic() < deadline, "deleted topic still listed"
            time.sleep(0.2)
    finally:
        admin.close()


def test_create_topics_response_messages(module_broker, topic_names):
    """The per-topic message of CreateTopics: a warning for a name with both '.' and '_',
    nothing for a plain one, and the colliding name when '.'/'_' collide."""
    bs = module_broker.bootstrap
    base = topic_names.new().replace("-", "")[:50]
    mixed, plain = f"m.{base}_x", f"plain{base}"
    admin = KafkaAdminClient(bootstrap_servers=bs)
    try:
        resp = admin.create_topics({mixed: {"num_partitions": 1, "replication_factor": 1},
                                    plain: {"num_partitions": 1, "replication_factor": 1}})
        by_name = {t["name"]: t for t in resp["topics"]}
        assert by_name[mixed]["error_code"] == 0
        msg = by_name[mixed]["error_message"] or ""
        assert "'.'" in msg and "'_'" in msg, f"no collision warning: {msg!r}"
        assert by_name[plain]["error_code"] == 0 and not by_name[plain]["error_message"]

        clash = f"m_{base}_x"  # the same as `mixed` once '.' and '_' are unified
        resp = admin.create_topics({clash: {"num_partitions": 1, "replication_factor": 1}},
                                   raise_errors=False)
        [t] = resp["topics"]
        assert t["error_code"] == 17, t
        assert mixed in (t["error_message"] or ""), t["error_message"]
    finally:
        admin.close()
