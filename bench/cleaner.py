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

With `--produce`, it also runs a strom broker process twice, with `log.cleaner.enable`
false and true, and produces `--produce-updates` records to `--keys` keys of a compacted
topic (1 MiB segments, min.cleanable.dirty.ratio 0.01, log.cleaner.backoff.ms 100) with
confluent-kafka: produce MB/s side by side, and the cleaner rounds the broker logged
meanwhile (the cleaner shares the interpreter, and so the GIL, with the event loop).
"""

from __future__ import annotations

import argparse
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
        del producer  # before the broker stops: no reconnection noise
        rounds = broker.log_text().count("INFO Cleaned bench-0")
    mb = args.produce_updates * (args.value_bytes + 10) / 1e6
    return {"enable": enable, "wall_s": wall, "mb_per_s": mb / wall,
            "records_per_s": args.produce_updates / wall, "rounds": rounds}


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
    args = parser.parse_args()
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
        print(f"{'cleaner':8} {'wall s':>7} {'MB/s':>7} {'records/s':>10} {'rounds':>6}")
        for enable in (False, True):
            r = run_produce(enable, args)
            print(f"{str(r['enable']).lower():8} {r['wall_s']:7.2f} {r['mb_per_s']:7.1f} "
                  f"{r['records_per_s']:10.0f} {r['rounds']:6d}")


if __name__ == "__main__":
    main()
