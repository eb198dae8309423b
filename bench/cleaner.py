#!/usr/bin/env python3
"""Log cleaner throughput: MB/s of dirty log cleaned, in this process, without a broker.

A compacted partition log is filled with `--updates` records to `--keys` keys (batches of
`--batch` records, `--value-bytes` values, `--segment-bytes` segments), then cleaned with
`LogCleanerManager.clean_once` until nothing is dirty (one thread's worth of work, run in
place: the event loop hand-off is not in the figure). Reported per codec: dirty MB, wall
and CPU seconds, MB/s of dirty log (bytes read by the key map and the copy together are
also given), records kept. The uncompressed case takes the batch-level path (kept batches
copied, others rebuilt from raw record bytes); a compressed case decodes and re-encodes
the batches that lose records.

    python bench/cleaner.py [--updates 200000] [--keys 1000] [--codecs none,lz4]
    python bench/cleaner.py --during

With `--produce`, it also runs a strom broker process twice, with `log.cleaner.enable`
false and true, and produces `--produce-updates` records to `--keys` keys of a compacted
topic (1 MiB segments, min.cleanable.dirty.ratio 0.01, log.cleaner.backoff.ms 100) with
confluent-kafka: produce MB/s side by side, the cleaner rounds the broker logged meanwhile,
and the CPU seconds the broker used: its own process (the event loop) and its cleaner worker
process (a child, read from /proc while it runs), so the cleaning is seen off the loop.

With `--during`, one broker process: a compacted topic gets `--dirty-updates` records to
`--dirty-keys` keys (16 MiB segments, min.cleanable.dirty.ratio 1, so it is not cleaned),
then `--phase-updates` records are produced to a second topic three times: before, during
(the ratio lowered to 0.01 starts one round; batches are sent until the broker logs that
it ended) and after the round. Per phase: produce MB/s, and the CPU seconds of the broker
process and of its cleaner worker process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid

from strom.clock import ManualClock
from strom.config import BrokerConfig, TopicConfig, validate_topic_configs
from strom.log.cleaner_manager import LogCleanerManager
from strom.log.manager import LogManager
from strom.log.records import Compression, NewRecord, build_batch
from strom.protocol.batch import read_header


def run(codec: str, args: argparse.Namespace) -> dict:
    root = tempfile.mkdtemp(prefix="strom-bench-cleaner-")
    try:
        clock = ManualClock()
        overrides = validate_topic_configs({
            "cleanup.policy": "compact", "segment.bytes": str(args.segment_bytes),
            "min.cleanable.dirty.ratio": "0.01"})
        config = TopicConfig(BrokerConfig({}), overrides)
        logs = LogManager([root], clock, 1, "bench")
        logs.prepare_dirs()
        logs.startup(lambda t: config, lambda t: None)
        plog = logs.get_or_create("bench", 0, config, uuid.uuid4())
        value = b"v" * args.value_bytes
        compression = Compression[codec.upper()]
        for start in range(0, args.updates, args.batch):
            records = [NewRecord(value, key=b"key-%06d" % ((start + i) % args.keys),
                                 timestamp=clock.now_ms())
                       for i in range(min(args.batch, args.updates - start))]
            data = bytearray(build_batch(records, compression=compression))
            plog.append_as_leader(data, read_header(data), 0)
        plog.roll()
        plog.high_watermark = plog.log_end_offset
        dirty = plog.size_in_bytes
        manager = LogCleanerManager(logs, BrokerConfig({}), clock)
        wall, cpu = time.perf_counter(), time.process_time()
        read = kept = rounds = 0
        while (result := manager.clean_once()) is not None:
            read += result.stats.bytes_read
            kept += result.stats.records_written
            rounds += 1
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        after = plog.size_in_bytes
        logs.shutdown()
        return {"codec": codec, "dirty_mb": dirty / 1e6, "after_mb": after / 1e6,
                "rounds": rounds, "wall_s": wall, "cpu_s": cpu,
                "mb_per_s": dirty / 1e6 / wall, "read_mb_per_s": read / 1e6 / wall,
                "records_per_s": args.updates / wall}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _cpu_s(pid: int) -> float:
    """utime + stime of one process, in seconds (/proc/<pid>/stat), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def run_produce(enable: bool, args: argparse.Namespace) -> dict:
    from confluent_kafka import Producer

    from strom.testing.broker import BrokerProcess
    from strom.testing.kafka import create_topic

    overrides = {"log.cleaner.enable": str(enable).lower(), "log.cleaner.backoff.ms": 100}
    with BrokerProcess(overrides=overrides) as broker:
        create_topic(broker.bootstrap, "bench", config={
            "cleanup.policy": "compact", "segment.bytes": str(1 << 20),
            "min.cleanable.dirty.ratio": "0.01"})
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                             "acks": 1})
        loop_cpu = _cpu_s(broker.pid)
        value = b"v" * args.value_bytes
        started = time.perf_counter()
        for i in range(args.produce_updates):
            while True:
                try:
                    producer.produce("bench", value, b"key-%06d" % (i % args.keys))
                    break
                except BufferError:
                    producer.poll(0.01)
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(60)
        wall = time.perf_counter() - started
        loop_cpu = _cpu_s(broker.pid) - loop_cpu
        # the cleaner worker's CPU since it started (it lives as long as the broker)
        worker_cpu = sum(_cpu_s(c) for c in _children(broker.pid))
        del producer  # before the broker stops: no reconnection noise
        rounds = broker.log_text().count("INFO Cleaned bench-0")
    mb = args.produce_updates * (args.value_bytes + 10) / 1e6
    return {"enable": enable, "wall_s": wall, "mb_per_s": mb / wall,
            "records_per_s": args.produce_updates / wall, "rounds": rounds,
            "broker_cpu_s": loop_cpu, "worker_cpu_s": worker_cpu}


def _produce(producer, topic: str, count: int, value: bytes, key_space: int,
             until=None) -> int:
    """Send `count` records (or, with `until`, batches of `count` until it is true);
    return how many were sent."""
    sent = 0
    while True:
        for i in range(count):
            while True:
                try:
                    producer.produce(topic, value, b"key-%07d" % ((sent + i) % key_space))
                    break
                except BufferError:
                    producer.poll(0.01)
            if i % 1000 == 0:
                producer.poll(0)
        sent += count
        producer.flush(60)
        if until is None or until():
            return sent


def run_during(args: argparse.Namespace) -> list[dict]:
    """Produce throughput before, during and after one cleaning round of a big dirty log."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    from strom.testing.broker import BrokerProcess
    from strom.testing.kafka import admin_client, create_topic

    overrides = {"log.cleaner.backoff.ms": 100}
    with BrokerProcess(overrides=overrides, startup_timeout=60) as broker:
        # min.cleanable.dirty.ratio 1: never cleaned until the ratio is lowered
        create_topic(broker.bootstrap, "dirty", config={
            "cleanup.policy": "compact", "segment.bytes": str(16 << 20),
            "min.cleanable.dirty.ratio": "1"})
        create_topic(broker.bootstrap, "hot")
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                             "acks": 1})
        value = b"v" * args.value_bytes
        _produce(producer, "dirty", args.dirty_updates, value, args.dirty_keys)
        rows = []

        def phase(name: str, until=None) -> None:
            loop_cpu = _cpu_s(broker.pid)
            worker_cpu = sum(_cpu_s(c) for c in _children(broker.pid))
            started = time.perf_counter()
            sent = _produce(producer, "hot", args.phase_updates, value, 1000, until)
            wall = time.perf_counter() - started
            rows.append({
                "phase": name, "wall_s": wall,
                "mb_per_s": sent * (args.value_bytes + 10) / 1e6 / wall,
                "broker_cpu_s": _cpu_s(broker.pid) - loop_cpu,
                "worker_cpu_s": sum(_cpu_s(c) for c in _children(broker.pid)) - worker_cpu})

        def cleaned() -> bool:
            return "INFO Cleaned dirty-0" in broker.log_text()

        phase("before")
        admin = admin_client(broker.bootstrap)
        resource = ConfigResource("topic", "dirty", incremental_configs=[ConfigEntry(
            "min.cleanable.dirty.ratio", "0.01",
            incremental_operation=AlterConfigOpType.SET)])
        for f in admin.incremental_alter_configs([resource]).values():
            f.result(timeout=30)
        phase("during", cleaned)
        phase("after")
        line = next(x for x in broker.log_text().splitlines() if "INFO Cleaned dirty-0" in x)
        rows.append({"phase": "round", "log": line.split("INFO ", 1)[1]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--segment-bytes", type=int, default=1 << 20)
    parser.add_argument("--codecs", default="none,lz4")
    parser.add_argument("--produce", action="store_true")
    parser.add_argument("--produce-updates", type=int, default=300_000)
    parser.add_argument("--during", action="store_true")
    parser.add_argument("--dirty-updates", type=int, default=1_000_000)
    parser.add_argument("--dirty-keys", type=int, default=500_000)
    parser.add_argument("--phase-updates", type=int, default=200_000)
    args = parser.parse_args()
    if args.during:
        print(f"a compacted log of {args.dirty_updates} updates to {args.dirty_keys} keys "
              f"cleaned in one round; meanwhile batches of {args.phase_updates} records "
              f"produced to another topic (confluent-kafka, acks=1)")
        print(f"{'phase':7} {'wall s':>7} {'MB/s':>7} {'broker cpu s':>12} {'worker cpu s':>12}")
        for r in run_during(args):
            if r["phase"] == "round":
                print(r["log"])
            else:
                print(f"{r['phase']:7} {r['wall_s']:7.2f} {r['mb_per_s']:7.1f} "
                      f"{r['broker_cpu_s']:12.1f} {r['worker_cpu_s']:12.1f}")
        return
    print(f"{args.updates} updates to {args.keys} keys, {args.value_bytes}-byte values, "
          f"batches of {args.batch}, {args.segment_bytes}-byte segments")
    print(f"{'codec':6} {'dirty MB':>9} {'after MB':>9} {'rounds':>6} {'wall s':>7} "
          f"{'cpu s':>6} {'MB/s':>7} {'read MB/s':>9} {'records/s':>10}")
    for codec in args.codecs.split(","):
        r = run(codec, args)
        print(f"{r['codec']:6} {r['dirty_mb']:9.1f} {r['after_mb']:9.2f} {r['rounds']:6d} "
              f"{r['wall_s']:7.2f} {r['cpu_s']:6.2f} {r['mb_per_s']:7.1f} "
              f"{r['read_mb_per_s']:9.1f} {r['records_per_s']:10.0f}")
    if args.produce:
        print(f"\nproduce {args.produce_updates} records to {args.keys} keys of a compacted "
              f"topic (confluent-kafka, acks=1)")
        print(f"{'cleaner':8} {'wall s':>7} {'MB/s':>7} {'records/s':>10} {'rounds':>6} "
              f"{'broker cpu s':>12} {'worker cpu s':>12}")
        for enable in (False, True):
            r = run_produce(enable, args)
            print(f"{str(r['enable']).lower():8} {r['wall_s']:7.2f} {r['mb_per_s']:7.1f} "
                  f"{r['records_per_s']:10.0f} {r['rounds']:6d} {r['broker_cpu_s']:12.1f} "
                  f"{r['worker_cpu_s']:12.1f}")


if __name__ == "__main__":
    main()
