"""Producer throughput and latency test (Kafka's kafka-producer-perf-test.sh), against any
Kafka-compatible cluster.

Sends --num-records records of --record-size random bytes (or lines of --payload-file, or
increasing numbers with --payload-monotonic) to --topic, at most --throughput records/s
(-1: as fast as possible). Client settings come from --producer-props KEY=VALUE ... and
--producer.config FILE (Kafka's names where librdkafka shares them; Java-only ones such as
key.serializer are ignored); --bootstrap-server sets bootstrap.servers. max.block.ms
(default 60000) bounds the wait for the topic's metadata: an unreachable cluster is one
error line and exit status 1.

Output, as Kafka's: every 5 s a window line, then the total:
  N records sent, X records/sec (Y MB/sec), A ms avg latency, M ms max latency,
  a ms 50th, b ms 95th, c ms 99th, d ms 99.9th.
On a terminal a progress bar (acknowledged records) is drawn on stderr. --print-metrics
adds the client's metrics as Kafka's "Metric Name  Value" table. Exit status 1 when any
record failed (each failure is printed on stderr).

examples:
  strom producer-perf-test --topic perf --num-records 100000 --record-size 100 \\
      --throughput -1 --producer-props bootstrap.servers=127.0.0.1:9092 acks=all
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from strom.cli import _common as common
from strom.cli import perf_stats
from strom.cli._common import ToolError

WINDOW_MS = 5000
MAX_SAMPLES = 500_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", required=True, metavar="TOPIC",
                        help="produce messages to this topic")
    parser.add_argument("--num-records", required=True, type=int, metavar="NUM-RECORDS",
                        help="number of messages to produce")
    payload = parser.add_mutually_exclusive_group(required=True)
    payload.add_argument("--record-size", type=int, metavar="RECORD-SIZE",
                         help="message size in bytes")
    payload.add_argument("--payload-file", metavar="PAYLOAD-FILE",
                         help="UTF-8 file whose --payload-delimiter separated parts are "
                              "sent in random order")
    payload.add_argument("--payload-monotonic", action="store_true",
                         help="payload is the record's number, increasing")
    parser.add_argument("--payload-delimiter", default="\\n", metavar="PAYLOAD-DELIMITER",
                        help="delimiter of --payload-file (default: \\n)")
    parser.add_argument("--throughput", required=True, type=float, metavar="THROUGHPUT",
                        help="at most this many records/sec (-1: no limit)")
    parser.add_argument("--producer-props", nargs="+", metavar="PROP-NAME=PROP-VALUE",
                        help="producer settings, e.g. bootstrap.servers=host:9092 acks=all")
    parser.add_argument("--producer.config", dest="producer_config", metavar="CONFIG-FILE",
                        help="producer config properties file")
    parser.add_argument("--bootstrap-server", metavar="HOST:PORT",
                        help="sets bootstrap.servers (wins over the props)")
    parser.add_argument("--print-metrics", action="store_true",
                        help="print out metrics at the end of the test")


class Stats:
    """Counts, latencies (every `sampling`-th kept, as Kafka's tool keeps at most 500000)
    and the 5 s windows."""

    def __init__(self, num_records: int, out=sys.stdout, window_ms: int = WINDOW_MS) -> None:
        now = time.monotonic()
        self.start = self.window_start = now
        self.sampling = max(1, num_records // min(num_records, MAX_SAMPLES))
        self.samples: list[int] = []
        self.iteration = 0
        self.count = self.bytes = self.total_latency = self.max_latency = 0
        self.w_count = self.w_bytes = self.w_latency = self.w_max = 0
        self.window_ms = window_ms
        self.out = out

    def record(self, latency_ms: int, size: int) -> None:
        self.count += 1
        self.bytes += size
        self.total_latency += latency_ms
        self.max_latency = max(self.max_latency, latency_ms)
        self.w_count += 1
        self.w_bytes += size
        self.w_latency += latency_ms
        self.w_max = max(self.w_max, latency_ms)
        if self.iteration % self.sampling == 0:
            self.samples.append(latency_ms)
        self.iteration += 1
        now = time.monotonic()
        if (now - self.window_start) * 1000 >= self.window_ms:
            self.print_window(now)

    def print_window(self, now: float) -> None:
        elapsed = max(now - self.window_start, 1e-9)
        print(f"{self.w_count} records sent, {self.w_count / elapsed:.1f} records/sec "
              f"({self.w_bytes / elapsed / (1024 * 1024):.2f} MB/sec), "
              f"{self.w_latency / max(self.w_count, 1):.1f} ms avg latency, "
              f"{float(self.w_max):.1f} ms max latency.", file=self.out, flush=True)
        self.window_start = now
        self.w_count = self.w_bytes = self.w_latency = self.w_max = 0

    def total_line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        p50, p95, p99, p999 = percentiles(self.samples, (0.5, 0.95, 0.99, 0.999))
        return (f"{self.count} records sent, {self.count / elapsed:.1f} records/sec "
                f"({self.bytes / elapsed / (1024 * 1024):.2f} MB/sec), "
                f"{self.total_latency / max(self.count, 1):.2f} ms avg latency, "
                f"{float(self.max_latency):.2f} ms max latency, {p50} ms 50th, "
                f"{p95} ms 95th, {p99} ms 99th, {p999} ms 99.9th.")


def percentiles(samples: list[int], points: tuple[float, ...]) -> list[int]:
    """The sample at index int(p * n) of the sorted samples (Kafka's choice); 0 if none."""
    if not samples:
        return [0] * len(points)
    ordered = sorted(samples)
    return [ordered[min(int(p * len(ordered)), len(ordered) - 1)] for p in points]


def payloads(args: argparse.Namespace):
    """A function of the record number giving its value."""
    rng = random.Random(0)
    if args.payload_monotonic:
        return lambda i: str(i).encode()
    if args.payload_file:
        delimiter = "\n" if args.payload_delimiter == "\\n" else args.payload_delimiter
        parts = [p.encode() for p in common.read_text(args.payload_file).split(delimiter) if p]
        if not parts:
            raise ToolError(f"{args.payload_file}: no payloads in the file")
        print(f"Reading payloads from: {args.payload_file}")
        print(f"Number of messages read: {len(parts)}")
        return lambda i: parts[rng.randrange(len(parts))]
    size = args.record_size
    # uppercase letters as Kafka's tool sends; one random buffer sliced at random offsets
    # keeps values varied without generating size bytes per record in Python
    pool = bytes(rng.randrange(26) + 65 for _ in range(size + 4096))
    return lambda i: pool[(o := rng.randrange(4097)):o + size]


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except common.client_errors() as e:
        return common.fail(f"strom producer-perf-test: {common.error_text(e)}")


def _run(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    from strom.cli.progress import Progress

    if args.num_records <= 0:
        raise ToolError("--num-records should be greater than zero")
    if args.record_size is not None and args.record_size <= 0:
        raise ToolError("--record-size should be greater than zero")
    if not args.producer_props and not args.producer_config and not args.bootstrap_server:
        raise ToolError("Either --producer-props or --producer.config must be specified.")
    props = perf_stats.client_properties(args.producer_config, args.producer_props,
                                         "--producer-props")
    if args.bootstrap_server:
        props["bootstrap.servers"] = args.bootstrap_server
    max_block_s = int(props.get("max.block.ms", 60000)) / 1000
    conf: dict[str, object] = {**common.BASE_CLIENT_CONFIG, "client.id": "perf-producer-client",
                               **perf_stats.without_java_only(props)}
    statistics = perf_stats.Statistics()
    if args.print_metrics:
        conf.update({"statistics.interval.ms": 1000, "stats_cb": statistics})
    next_payload = payloads(args)
    stats = Stats(args.num_records)
    failed = 0

    def delivered(err, msg) -> None:
        nonlocal failed
        if err is not None:
            failed += 1
            print(f"record failed: {err.str()}", file=sys.stderr)
            return
        stats.record(int((msg.latency() or 0.0) * 1000), len(msg))
        progress.advance()

    producer = Producer(conf)
    perf_stats.wait_for_topic(producer, args.topic, max_block_s)
    throughput = args.throughput
    began = time.monotonic()
    with Progress("Producing", total=args.num_records, unit="records") as progress:
        for i in range(args.num_records):
            value = next_payload(i)
            while True:
                try:
                    producer.produce(args.topic, value, on_delivery=delivered)
                    break
                except BufferError:  # the client's queue is full: let deliveries drain it
                    producer.poll(0.01)
            if i % 64 == 0:
                producer.poll(0)
            if throughput > 0:
                ahead = (i + 1) / throughput - (time.monotonic() - began)
                if ahead > 0:
                    producer.poll(ahead)
        while len(producer) > 0:
            producer.flush(1.0)
    print(stats.total_line(), flush=True)
    if args.print_metrics:
        statistics.wait(producer)
        print(statistics.table("producer-metrics", {
            "record-send-total": "txmsgs", "outgoing-byte-total": "tx_bytes",
            "request-total": "tx", "response-total": "rx", "incoming-byte-total": "rx_bytes",
        }, {"record-error-total": failed}))
    return 1 if failed else 0
