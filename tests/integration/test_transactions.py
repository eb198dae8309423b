"""Transactions end to end, coordinator and partitions together (issue 12), with real
clients: confluent-kafka consume-transform-produce across two topics with random aborts
(read_committed sees each committed record exactly once and no aborted one;
read_uncommitted sees both), zombie fencing, kafka-python's and aiokafka's transactional
producers, a producer killed mid-transaction that the coordinator aborts after its
timeout so the LSO moves on, a broker killed (-9) while transactions commit (after its
restart every transaction is whole or absent), and `strom transactions`."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import textwrap
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from strom.testing.kafka import create_topic
from strom.testing.txn_clients import TxnWorker, check_atomic, read_to_end

pytestmark = pytest.mark.timeout(120)

OVERRIDES = {"transaction.state.log.num.partitions": 2, "offsets.topic.num.partitions": 2,
             "transaction.abort.timed.out.transaction.cleanup.interval.ms": 300}


@pytest.fixture(scope="module")
def broker_overrides():
    return OVERRIDES


def txn_producer(bootstrap: str, txn_id: str, **conf) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                  "linger.ms": 5, **conf})
    p.init_transactions(30)
    return p


def read_values(bootstrap: str, topic: str, partitions: int, committed: bool) -> list[bytes]:
    return read_to_end(bootstrap, topic, partitions, committed, timeout=20)


def test_consume_transform_produce_with_random_aborts(module_broker, topic_names):
    bootstrap = module_broker.bootstrap
    src, dst = topic_names.new(), topic_names.new()
    create_topic(bootstrap, src, partitions=2)
    create_topic(bootstrap, dst, partitions=2)
    plain = Producer({"bootstrap.servers": bootstrap})
    values = [f"v{i}".encode() for i in range(40)]
    for i, v in enumerate(values):
        plain.produce(src, v, partition=i % 2)
    assert plain.flush(15) == 0
    group = f"ctp-{src}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(src, 0, 0), TopicPartition(src, 1, 0)])
    producer = txn_producer(bootstrap, f"ctp-{src}")
    rnd = random.Random(12)
    committed, aborted = [], []
    deadline = time.monotonic() + 60
    while len(committed) < len(values):
        assert time.monotonic() < deadline, (len(committed), len(aborted))
        msgs = [m for m in consumer.consume(6, timeout=1) if not m.error()]
        if not msgs:
            continue
        producer.begin_transaction()
        for m in msgs:
            producer.produce(dst, m.value() + b"-out", partition=m.partition())
        assert producer.flush(15) == 0  # in the log before an abort, for read_uncommitted
        producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                             consumer.consumer_group_metadata(), 15)
        if rnd.random() < 0.35:
            producer.abort_transaction(30)
            aborted += [m.value() + b"-out" for m in msgs]
            firsts: dict[int, int] = {}
            for m in msgs:
                firsts.setdefault(m.partition(), m.offset())
            for p, offset in firsts.items():
                consumer.seek(TopicPartition(src, p, offset))
        else:
            producer.commit_transaction(30)
            committed += [m.value() + b"-out" for m in msgs]
    assert aborted, "the seed aborts at least one transaction"
    assert sorted(committed) == sorted(v + b"-out" for v in values)
    seen = read_values(bootstrap, dst, 2, committed=True)
    assert sorted(seen) == sorted(committed)  # each exactly once, none aborted
    everything = read_values(bootstrap, dst, 2, committed=False)
    assert sorted(everything) == sorted(committed + aborted)
    # the offsets committed in the transactions are the group's
    offsets = consumer.committed([TopicPartition(src, 0), TopicPartition(src, 1)], 10)
    assert [tp.offset for tp in offsets] == [20, 20]
    consumer.close()


def test_zombie_producer_is_fenced(module_broker, topic_name):
    bootstrap = module_broker.bootstrap
    create_topic(bootstrap, topic_name, partitions=1)
    txn_id = f"zombie-{topic_name}"
    old = txn_producer(bootstrap, txn_id)
    old.begin_transaction()
    old.produce(topic_name, b"zombie", partition=0)
    assert old.flush(15) == 0
    new = txn_producer(bootstrap, txn_id)  # aborts the old transaction, bumps the epoch
    with pytest.raises(KafkaException) as e:
        old.commit_transaction(15)
    assert e.value.args[0].fatal() or "fenced" in str(e.value).lower()
    new.begin_transaction()
    new.produce(topic_name, b"new", partition=0)
    new.commit_transaction(30)
    assert read_values(bootstrap, topic_name, 1, committed=True) == [b"new"]
    assert read_values(bootstrap, topic_name, 1, committed=False) == [b"zombie", b"new"]


def test_kafka_python_and_aiokafka_transactional_producers(module_broker, topic_name):
    from aiokafka import AIOKafkaProducer
    from aiokafka.structs import TopicPartition as AioTopicPartition
    from kafka import KafkaProducer

    bootstrap = module_broker.bootstrap
    create_topic(bootstrap, topic_name, partitions=1)
    kp = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"kp-{topic_name}")
    try:
        kp.init_transactions()
        kp.begin_transaction()
        kp.send(topic_name, b"kp-aborted", partition=0)
        kp.flush(timeout=10)  # in the log before the abort
        kp.abort_transaction()
        kp.begin_transaction()
        kp.send(topic_name, b"kp-committed", partition=0)
        kp.commit_transaction()
    finally:
        kp.close(timeout=10)

    async def aio():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap,
                                    transactional_id=f"aio-{topic_name}")
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic_name, b"aio-committed", partition=0)
                await producer.send_offsets_to_transaction(
                    {AioTopicPartition(topic_name, 0): 7}, f"aio-group-{topic_name}")
            await producer.begin_transaction()
            await producer.send_and_wait(topic_name, b"aio-aborted", partition=0)
            await producer.abort_transaction()
        finally:
            await producer.stop()

    asyncio.run(asyncio.wait_for(aio(), 60))
    assert read_values(bootstrap, topic_name, 1, committed=True) == \
        [b"kp-committed", b"aio-committed"]
    assert len(read_values(bootstrap, topic_name, 1, committed=False)) == 4
    # aiokafka's TxnOffsetCommit (an older version) committed with the transaction
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"aio-group-{topic_name}"})
    try:
        assert [tp.offset for tp in c.committed([TopicPartition(topic_name, 0)], 10)] == [7]
    finally:
        c.close()


def test_killed_producer_is_aborted_after_its_timeout(module_broker, topic_name):
    bootstrap = module_broker.bootstrap
    create_topic(bootstrap, topic_name, partitions=1)
    script = textwrap.dedent(f"""
        import os
        from confluent_kafka import Producer
        p = Producer({{"bootstrap.servers": "{bootstrap}", "transactional.id": "killed",
                      "transaction.timeout.ms": 2000}})
        p.init_transactions(30)
        p.begin_transaction()
        p.produce("{topic_name}", b"never", partition=0)
        assert p.flush(15) == 0
        os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == -9
    plain = Producer({"bootstrap.servers": bootstrap})
    plain.produce(topic_name, b"after", partition=0)
    assert plain.flush(15) == 0
    # read_committed reaches "after" only once the open transaction is aborted
    deadline = time.monotonic() + 30
    while True:
        got = read_values(bootstrap, topic_name, 1, committed=True)
        if got:
            break
        assert time.monotonic() < deadline, "the LSO never moved past the open transaction"
        time.sleep(0.3)
    assert got == [b"after"]
    assert read_values(bootstrap, topic_name, 1, committed=False) == [b"never", b"after"]


def strom_tool(broker, *args: str) -> str:
    """`python -m strom transactions <args>`: its stdout (asserting success)."""
    proc = subprocess.run([sys.executable, "-m", "strom", "transactions", *args,
                           "--bootstrap-server", broker.bootstrap],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_transactions_tool(start_broker, topic_name):
    from strom.testing.transactions import RawTxnProducer

    # without KIP-890 verification a producer the coordinator does not know can leave a
    # hanging transaction, as with an older broker
    module_broker = start_broker({**OVERRIDES,
                                  "transaction.partition.verification.enable": "false"})
    bootstrap = module_broker.bootstrap
    create_topic(bootstrap, topic_name, partitions=1)
    txn_id = f"tool-{topic_name}"
    p = txn_producer(bootstrap, txn_id)
    p.begin_transaction()
    p.produce(topic_name, b"open", partition=0)
    assert p.flush(15) == 0
    listed = strom_tool(module_broker, "list").splitlines()
    assert listed[0].split() == ["TransactionalId", "Coordinator", "ProducerId",
                                 "TransactionState"]
    row = next(line.split() for line in listed if line.startswith(txn_id))
    assert row[1] == "1" and row[3] == "Ongoing"
    described = strom_tool(module_broker, "describe", "--transactional-id", txn_id)
    fields = described.splitlines()[1].split()
    assert fields[0] == "1" and fields[1] == txn_id and fields[4] == "Ongoing"
    assert fields[-1] == f"{topic_name}-0"
    producers = strom_tool(module_broker, "describe-producers", "--topic", topic_name,
                           "--partition", "0").splitlines()
    assert producers[0].split()[0] == "ProducerId"
    assert producers[1].split()[0] == row[2] and producers[1].split()[-1] == "0"
    p.commit_transaction(30)
    # a transaction no coordinator knows (markers never written): hanging, then aborted
    raw = RawTxnProducer(module_broker.port, transactional_id=txn_id)
    try:
        assert raw.send(topic_name, 0, [b"hung"]).error_code == 0
    finally:
        raw.sock.close()
    time.sleep(0.01)
    hanging = strom_tool(module_broker, "find-hanging", "--broker-id", "1",
                         "--max-transaction-timeout", "0", "--topic", topic_name)
    rows = [line.split() for line in hanging.splitlines()[1:]]
    assert [(r[0], r[2], r[5]) for r in rows] == [(topic_name, str(raw.producer_id), "2")]
    strom_tool(module_broker, "abort", "--topic", topic_name, "--partition", "0",
               "--start-offset", "2")
    assert read_values(bootstrap, topic_name, 1, committed=True) == [b"open"]


def test_broker_kill_mid_commit_leaves_every_transaction_whole_or_absent(start_broker,
                                                                        topic_name):
    b = start_broker(OVERRIDES)
    create_topic(b.bootstrap, topic_name, partitions=2)
    workers = [TxnWorker(b.bootstrap, f"k{n}-{topic_name}", topic_name, 2, records=4)
               .start() for n in range(2)]
    deadline = time.monotonic() + 60
    while not all(w.committed() >= 3 for w in workers):
        assert time.monotonic() < deadline, "no commits before the kill"
        time.sleep(0.05)
    b.restart(crash=True)
    before = [len(w.outcomes) for w in workers]
    while not all(w.committed(since) >= 2 for w, since in zip(workers, before, strict=True)):
        assert time.monotonic() < deadline + 60, "no commits after the restart"
        time.sleep(0.1)
    for w in workers:
        w.stop()
    outcomes = {txn: o for w in workers for txn, o in w.outcomes.items()}
    check_atomic(read_values(b.bootstrap, topic_name, 2, committed=True), outcomes, 4)
