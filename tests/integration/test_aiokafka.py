"""aiokafka against a real strom broker, with default client settings except
`bootstrap_servers` (and what a test is about). aiokafka 0.14 compresses with cramjam (all
four codecs) and speaks older versions: Produce v8, Fetch v11, Metadata v5.

Each test runs its own event loop with `asyncio.run`, under an overall `asyncio.wait_for`.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic

from strom.testing.data import Got, check_read_back, normalize_headers, samples
from strom.testing.kafka import wait_for_topic

pytestmark = pytest.mark.timeout(120)

CODECS = [None, "gzip", "snappy", "lz4", "zstd"]


def run(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def create_topics(bootstrap: str, *topics: tuple[str, int], **kwargs) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resp = await admin.create_topics([NewTopic(name, n, 1) for name, n in topics], **kwargs)
        errors = [t for t in resp.topic_errors if t[1] != 0]
        assert not errors, f"CreateTopics errors: {errors}"
    finally:
        await admin.close()
    for name, n in topics:
        await asyncio.to_thread(wait_for_topic, bootstrap, name, n)


async def produce(bootstrap: str, topic: str, recs, *, partition: int | None = None,
                  **conf) -> dict[int, tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **conf)
    await producer.start()
    try:
        futures = []
        for s in recs:
            fut = await producer.send(topic, value=s.value, key=s.key, headers=list(s.headers),
                                      timestamp_ms=s.timestamp, partition=partition)
            futures.append((s.index, fut))
        acked = {}
        for idx, fut in futures:
            md = await fut
            acked[idx] = (md.partition, md.offset)
        return acked
    finally:
        await producer.stop()


async def read(bootstrap: str, topic: str, ends: dict[int, int],
               starts: dict[int, int] | None = None, timeout: float = 30.0) -> list[Got]:
    starts = starts or {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    got: list[Got] = []
    try:
        tps = {p: TopicPartition(topic, p) for p in ends}
        consumer.assign(list(tps.values()))
        for p, tp in tps.items():
            if p in starts:
                consumer.seek(tp, starts[p])
            else:
                await consumer.seek_to_beginning(tp)
        remaining = {p for p, end in ends.items() if end > starts.get(p, 0)}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    got.append(Got(tp.partition, r.offset, r.key, r.value,
                                   normalize_headers(r.headers), r.timestamp))
                    if r.offset + 1 >= ends[tp.partition]:
                        remaining.discard(tp.partition)
        assert not remaining, f"partitions {remaining} not read to the end in {timeout}s"
    finally:
        await consumer.stop()
    return got


def ends_of(acked, partitions):
    ends = dict.fromkeys(range(partitions), 0)
    for p, off in acked.values():
        ends[p] = max(ends[p], off + 1)
    return ends


@pytest.mark.parametrize("codec", CODECS, ids=[c or "none" for c in CODECS])
def test_produce_and_read_back_keyed_records_with_headers(module_broker, topic_name, codec):
    bs = module_broker.bootstrap

    async def scenario():
        await create_topics(bs, (topic_name, 3))
        recs = samples(40, tag=str(codec))
        acked = await produce(bs, topic_name, recs, compression_type=codec)
        got = await read(bs, topic_name, ends_of(acked, 3))
        check_read_back(recs, acked, got)

    run(scenario())


def test_read_from_a_given_offset(module_broker, topic_name):
    bs = module_broker.bootstrap

    async def scenario():
        await create_topics(bs, (topic_name, 1))
        recs = samples(20, tag="aio-offset")
        acked = await produce(bs, topic_name, recs, partition=0)
        got = await read(bs, topic_name, {0: 20}, starts={0: 9})
        assert [g.offset for g in got] == list(range(9, 20))
        check_read_back(recs, acked, got, start_offsets={0: 9})

    run(scenario())


def test_offsets_for_times_and_end_offsets(module_broker, topic_name):
    bs = module_broker.bootstrap

    async def scenario():
        await create_topics(bs, (topic_name, 1))
        base = int(time.time() * 1000) - 3_600_000
        recs = samples(10, tag="aio-ts", base_timestamp=base, timestamp_step=1000)
        acked = await produce(bs, topic_name, recs, partition=0)
        tp = TopicPartition(topic_name, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=bs)
        await consumer.start()
        try:
            assert await consumer.beginning_offsets([tp]) == {tp: 0}
            assert await consumer.end_offsets([tp]) == {tp: 10}
            found = (await consumer.offsets_for_times({tp: base + 2500}))[tp]
            assert found is not None and (found.offset, found.timestamp) == (3, base + 3000)
            assert (await consumer.offsets_for_times({tp: base + 60_000}))[tp] is None
        finally:
            await consumer.stop()
        got = await read(bs, topic_name, {0: 10}, starts={0: found.offset})
        check_read_back(recs, acked, got, start_offsets={0: 3})

    run(scenario())


def test_idempotent_producer_has_no_duplicates(module_broker, topic_name):
    bs = module_broker.bootstrap

    async def scenario():
        await create_topics(bs, (topic_name, 2))
        recs = samples(150, tag="aio-idem", null_value_every=0)
        acked = await produce(bs, topic_name, recs, enable_idempotence=True)
        got = await read(bs, topic_name, ends_of(acked, 2))
        assert len(got) == 150 and len({g.value for g in got}) == 150
        check_read_back(recs, acked, got)

    run(scenario())


def test_admin_client(module_broker, topic_name):
    bs = module_broker.bootstrap

    async def scenario():
        await create_topics(bs, (topic_name, 1))
        admin = AIOKafkaAdminClient(bootstrap_servers=bs)
        await admin.start()
        try:
            assert topic_name in await admin.list_topics()
            resp = await admin.create_partitions({topic_name: NewPartitions(3)})
            assert all(t[1] == 0 for t in resp.topic_errors), resp
            await asyncio.to_thread(wait_for_topic, bs, topic_name, 3)
            resp = await admin.create_topics([NewTopic(topic_name + "-v", 1, 1)],
                                             validate_only=True)
            assert all(t[1] == 0 for t in resp.topic_errors), resp
            assert topic_name + "-v" not in await admin.list_topics()
            await admin.delete_topics([topic_name])
            deadline = time.monotonic() + 15
            while topic_name in await admin.list_topics():
                assert time.monotonic() < deadline, "deleted topic still listed"
                await asyncio.sleep(0.2)
        finally:
            await admin.close()

    run(scenario())


def test_producer_auto_creates_topic(module_broker, topic_name):
    bs = module_broker.bootstrap

    async def scenario():
        recs = samples(5, tag="aio-auto")
        acked = await produce(bs, topic_name, recs)
        assert {p for p, _ in acked.values()} == {0}  # num.partitions defaults to 1
        got = await read(bs, topic_name, {0: 5})
        check_read_back(recs, acked, got)

    run(scenario())
