"""Crash safety (issue point 5): kill -9 during heavy produce loses nothing acknowledged; a
clean SIGTERM needs no recovery; a torn tail and missing index files are repaired on start.

The producer is confluent-kafka with acks=all; every delivery report that succeeded is
recorded as (partition, offset, value). After the restart on the same log dir, each of those
must be read back at exactly that offset with exactly that value.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from strom.testing.kafka import create_topic

pytestmark = pytest.mark.timeout(180)

PARTITIONS = 3


class HeavyProducer:
    """Produces as fast as it can from a thread, recording every acknowledged record."""

    def __init__(self, bootstrap: str, topic: str, value_size: int = 150) -> None:
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                  "enable.idempotence": False})
        self.acked: dict[tuple[int, int], bytes] = {}
        self.failed = 0
        self.sent = 0
        self.duplicates: list[tuple[int, int]] = []  # offsets acknowledged twice
        self._pad = b"p" * value_size
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, err, msg) -> None:
        with self._lock:
            if err is None:
                key = (msg.partition(), msg.offset())
                if key in self.acked:
                    self.duplicates.append(key)
                self.acked[key] = msg.value()
            else:
                self.failed += 1

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            value = b"seq-%08d-" % seq + self._pad
            try:
                self.producer.produce(self.topic, value=value, key=b"k%d" % (seq % 97),
                                      on_delivery=self._on_delivery)
                seq += 1
                self.sent = seq
            except BufferError:
                self.producer.poll(0.05)
                continue
            if seq % 100 == 0:
                self.producer.poll(0)
        self.producer.poll(0)

    def start(self) -> None:
        self._thread.start()

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_acked(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_count() < n:
            assert time.monotonic() < deadline, (
                f"only {self.acked_count()} of {n} records acknowledged in {timeout}s "
                f"(failed {self.failed})")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop producing and settle every outstanding message (as failed if not acked)."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.producer.purge(in_queue=True, in_flight=True, blocking=False)
        self.producer.flush(10)
        self.producer = None  # destroy the client now, not at some later collection
        assert not self.duplicates, f"offsets acknowledged twice: {self.duplicates[:5]}"


def read_all(bootstrap: str, topic: str, partitions: int = PARTITIONS,
             timeout: float = 60.0) -> dict[tuple[int, int], bytes]:
    """Every record of every partition, from the log start to the high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "strom-it-unused",
                         "enable.auto.commit": False})
    out: dict[tuple[int, int], bytes] = {}
    try:
        ends = {}
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            assert low == 0, f"partition {p} log start moved to {low}"
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends if ends[p] > 0])
        remaining = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            key = (msg.partition(), msg.offset())
            assert key not in out, f"offset {key} read twice"
            out[key] = msg.value()
            if msg.offset() + 1 >= ends[msg.partition()]:
                remaining.discard(msg.partition())
        assert not remaining, f"partitions {remaining} not read to the end in {timeout}s"
        for p, end in ends.items():
            offsets = sorted(o for (pp, o) in out if pp == p)
            assert offsets == list(range(end)), f"partition {p}: holes in 0..{end}"
    finally:
        consumer.close()
    return out


def assert_all_acked_present(acked: dict, stored: dict) -> None:
    missing = [k for k in acked if k not in stored]
    assert not missing, (f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]} "
                         f"({len(acked)} acknowledged, {len(stored)} stored)")
    wrong = [k for k, v in acked.items() if stored[k] != v]
    assert not wrong, f"{len(wrong)} records changed, e.g. {wrong[:5]}"


def produce_sync(bootstrap: str, topic: str, values: list[bytes], partition: int) -> list[int]:
    p = Producer({"bootstrap.servers": bootstrap})
    offsets = []
    errs = []

    def cb(err, msg):
        (errs if err else offsets).append(err or msg.offset())

    for v in values:
        p.produce(topic, value=v, partition=partition, on_delivery=cb)
    assert p.flush(20) == 0
    assert not errs, errs
    return offsets


def recovery_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "recover" in line.lower()]


@pytest.mark.parametrize("segment_bytes", [None, 200_000], ids=["default-segments",
                                                                 "small-segments"])
def test_kill_9_during_heavy_produce_loses_nothing_acknowledged(start_broker, topic_name,
                                                                 segment_bytes):
    overrides = {"log.segment.bytes": segment_bytes} if segment_bytes else {}
    b = start_broker(overrides)
    create_topic(b.bootstrap, topic_name, PARTITIONS)
    hp = HeavyProducer(b.bootstrap, topic_name)
    hp.start()
    try:
        hp.wait_acked(6000)
        b.kill()  # mid-stream: the producer is still sending
    finally:
        hp.stop()
    acked = dict(hp.acked)
    assert len(acked) >= 6000

    b.start()
    stored = read_all(b.bootstrap, topic_name)
    assert_all_acked_present(acked, stored)
    lines = recovery_lines(b.log_text(current_run_only=True))
    assert any("recovered" in line.lower() for line in lines), (
        f"no recovery logged after kill -9: {lines}")

    # the recovered log takes new writes right after its end
    end0 = max((o for (p, o) in stored if p == 0), default=-1) + 1
    assert produce_sync(b.bootstrap, topic_name, [b"after-1", b"after-2"], 0) == [end0,
                                                                                 end0 + 1]
    stored2 = read_all(b.bootstrap, topic_name)
    assert_all_acked_present(acked, stored2)
    assert stored2[(0, end0)] == b"after-1"


def test_sigterm_flushes_and_needs_no_recovery(start_broker, topic_name):
    b = start_broker({"log.segment.bytes": 200_000})
    create_topic(b.bootstrap, topic_name, PARTITIONS)
    hp = HeavyProducer(b.bootstrap, topic_name)
    hp.start()
    try:
        hp.wait_acked(3000)
    finally:
        hp.stop()
    acked = dict(hp.acked)
    before = read_all(b.bootstrap, topic_name)
    assert_all_acked_present(acked, before)

    code = b.stop()
    assert code == 0, f"broker exit code {code} on SIGTERM"
    b.start()
    run_log = b.log_text(current_run_only=True)
    assert "recovery not needed" in run_log.lower(), (
        f"no 'recovery not needed' after a clean shutdown; recovery lines: "
        f"{recovery_lines(run_log)}")
    after = read_all(b.bootstrap, topic_name)
    assert after == before


def segment_files(log_dir: Path, topic: str, partition: int, suffix: str) -> list[Path]:
    return sorted((log_dir / f"{topic}-{partition}").glob(f"*{suffix}"))


def test_torn_tail_and_missing_indexes_are_repaired(start_broker, topic_name):
    b = start_broker({"log.segment.bytes": 100_000})
    create_topic(b.bootstrap, topic_name, 1)
    base = int(time.time() * 1000) - 1_000_000
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    acked: dict[int, bytes] = {}
    for i in range(3000):
        v = b"rec-%06d-" % i + b"z" * 100
        p.produce(topic_name, value=v, partition=0, timestamp=base + i,
                  on_delivery=lambda err, msg: acked.__setitem__(msg.offset(), msg.value())
                  if err is None else None)
        if i % 200 == 199:
            assert p.flush(15) == 0  # batches of ~26 KB: several segments of 100 KB
    assert p.flush(30) == 0
    assert sorted(acked) == list(range(3000))
    b.kill()

    logs = segment_files(b.log_dir, topic_name, 0, ".log")
    assert len(logs) >= 2, f"expected several segments with log.segment.bytes=100000: {logs}"
    # a torn write at the end of the active segment: a batch header promising more bytes
    with open(logs[-1], "ab") as f:
        f.write((0).to_bytes(8, "big") + (500).to_bytes(4, "big") + b"\x00\x00\x00\x00\x02" +
                b"\x13" * 40)
    # and the indexes are gone
    removed = []
    for suffix in (".index", ".timeindex"):
        for path in segment_files(b.log_dir, topic_name, 0, suffix):
            path.unlink()
            removed.append(path.name)
    assert removed, "no index files found to remove"

    b.start()
    stored = read_all(b.bootstrap, topic_name, partitions=1)
    assert {o: v for (_, o), v in stored.items()} == acked
    # the rebuilt indexes answer offset and time lookups
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "strom-it-unused",
                  "enable.auto.commit": False})
    try:
        [tp] = c.offsets_for_times([TopicPartition(topic_name, 0, base + 2222)], timeout=15)
        assert tp.offset == 2222
        c.assign([TopicPartition(topic_name, 0, 1777)])
        deadline = time.monotonic() + 15
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = c.poll(0.5)
        assert msg is not None and not msg.error(), msg and msg.error()
        assert (msg.offset(), msg.value()) == (1777, acked[1777])
    finally:
        c.close()
    # new writes land right after the last good record, not after the torn bytes
    assert produce_sync(b.bootstrap, topic_name, [b"after-torn"], 0) == [3000]
    assert {o: v for (_, o), v in read_all(b.bootstrap, topic_name, 1).items()}[3000] == \
        b"after-torn"


def test_repeated_crashes(start_broker, topic_name):
    b = start_broker({"log.segment.bytes": 150_000})
    create_topic(b.bootstrap, topic_name, PARTITIONS)
    acked: dict = {}
    for _ in range(3):
        hp = HeavyProducer(b.bootstrap, topic_name, value_size=60)
        hp.start()
        try:
            hp.wait_acked(1500)
            b.kill()
        finally:
            hp.stop()
        reused = set(acked) & set(hp.acked)
        assert not reused, f"offsets acknowledged again after a restart: {sorted(reused)[:5]}"
        acked.update(hp.acked)
        b.start()
        assert_all_acked_present(acked, read_all(b.bootstrap, topic_name))
