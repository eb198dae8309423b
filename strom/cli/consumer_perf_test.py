"""Consumer throughput test (Kafka's kafka-consumer-perf-test.sh), against any
Kafka-compatible cluster.

Joins --group (default perf-consumer-<random>), subscribes to --topic and reads until
--messages records arrived, or no record came for --timeout ms (then Kafka's WARNING line).
It starts at the earliest offset unless --from-latest (or the group's committed offsets).
Client settings: --consumer.config FILE (librdkafka names; Java-only ones are ignored),
--fetch-size, --socket-buffer-size. A cluster that cannot be reached within --timeout is one
error line and exit status 1.

Output, as Kafka's: the CSV header (unless --hide-header)
  start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec,
  rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
and one line of values at the end; with --show-detailed-stats a line per
--reporting-interval instead ("time, threadId, ..."). On a terminal a progress bar is
drawn on stderr. --print-metrics adds the client's metrics table.

examples:
  strom consumer-perf-test --bootstrap-server 127.0.0.1:9092 --topic perf --messages 100000
"""

from __future__ import annotations

import argparse
import random
import re
import time
from datetime import datetime

from strom.cli import _common as common
from strom.cli import perf_stats
from strom.cli._common import ToolError

MB = 1024 * 1024
BATCH = 500

# Java SimpleDateFormat letters -> strftime, for --date-format (the common ones)
_JAVA_DATE = {"yyyy": "%Y", "yy": "%y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M",
              "ss": "%S", "SSS": "{ms}", "EEE": "%a", "Z": "%z"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-server", required=True, metavar="HOST:PORT",
                        help="REQUIRED: the server(s) to connect to")
    parser.add_argument("--topic", required=True, help="REQUIRED: the topic to consume from")
    parser.add_argument("--messages", required=True, type=int,
                        help="REQUIRED: the number of messages to consume")
    parser.add_argument("--group", default=f"perf-consumer-{random.randrange(100000)}",
                        help="the group id to consume on (default perf-consumer-<random>)")
    parser.add_argument("--fetch-size", type=int, default=1024 * 1024,
                        help="the amount of data to fetch in a single request (default 1 MiB)")
    parser.add_argument("--from-latest", action="store_true",
                        help="without committed offsets, start at the latest offset "
                             "instead of the earliest")
    parser.add_argument("--socket-buffer-size", type=int, default=2 * 1024 * 1024,
                        help="the size of the TCP receive buffer (default 2 MiB)")
    parser.add_argument("--consumer.config", dest="consumer_config", metavar="FILE",
                        help="consumer config properties file")
    parser.add_argument("--print-metrics", action="store_true", help="print out the metrics")
    parser.add_argument("--show-detailed-stats", action="store_true",
                        help="print stats for each --reporting-interval instead of the total")
    parser.add_argument("--timeout", type=int, default=10000, metavar="MS",
                        help="the maximum time between returned records (default 10000)")
    parser.add_argument("--reporting-interval", type=int, default=5000, metavar="MS",
                        help="interval of the detailed stats (default 5000)")
    parser.add_argument("--date-format", default="yyyy-MM-dd HH:mm:ss:SSS",
                        help="Java SimpleDateFormat of the time fields "
                             "(default yyyy-MM-dd HH:mm:ss:SSS)")
    parser.add_argument("--hide-header", action="store_true",
                        help="skip printing the header for the stats")


def date_formatter(pattern: str):
    """A function of a time (seconds) formatting it as Java's SimpleDateFormat `pattern`."""
    parts = re.split("(yyyy|yy|MM|dd|HH|mm|ss|SSS|EEE|Z)", pattern)
    fmt = "".join(_JAVA_DATE.get(p, p.replace("%", "%%")) for p in parts)

    def format_time(t: float) -> str:
        text = datetime.fromtimestamp(t).astimezone().strftime(fmt)
        return text.replace("{ms}", f"{int(t * 1000) % 1000:03d}")
    return format_time


HEADER_FIELDS = ", rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"


def header(detailed: bool) -> str:
    first = "time, threadId" if detailed else "start.time, end.time"
    return (f"{first}, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec"
            + HEADER_FIELDS)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except common.client_errors() as e:
        return common.fail(f"strom consumer-perf-test: {common.error_text(e)}")


def _run(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer

    from strom.cli.progress import Progress

    if args.messages <= 0:
        raise ToolError("--messages should be greater than zero")
    props = perf_stats.without_java_only(
        perf_stats.client_properties(args.consumer_config, [], "--consumer.config"))
    conf: dict[str, object] = {
        **common.BASE_CLIENT_CONFIG,
        "group.id": args.group,
        "client.id": "perf-consumer-client",
        "auto.offset.reset": "latest" if args.from_latest else "earliest",
        "fetch.max.bytes": max(args.fetch_size, 1024),
        "max.partition.fetch.bytes": max(args.fetch_size, 1024),
        "socket.receive.buffer.bytes": args.socket_buffer_size,
        **props,
        "bootstrap.servers": args.bootstrap_server,
    }
    statistics = perf_stats.Statistics()
    if args.print_metrics:
        conf.update({"statistics.interval.ms": 1000, "stats_cb": statistics})
    fmt = date_formatter(args.date_format)
    timeout_s = args.timeout / 1000
    join = {"started": time.monotonic(), "total": 0.0, "round": 0.0}

    def assigned(consumer, partitions) -> None:
        took = time.monotonic() - join["started"]
        join["total"] += took
        join["round"] += took

    def revoked(consumer, partitions) -> None:
        join["started"] = time.monotonic()

    if not args.hide_header:
        print(header(args.show_detailed_stats), flush=True)
    consumer = Consumer(conf)
    try:
        perf_stats.wait_for_topic(consumer, args.topic, timeout_s)
        start_wall, start = time.time(), time.monotonic()
        join["started"] = start
        consumer.subscribe([args.topic], on_assign=assigned, on_revoke=revoked)
        count = size = last_count = last_size = 0
        last_report = last_consumed = time.monotonic()
        with Progress("Consuming", total=args.messages, unit="records") as progress:
            while count < args.messages and time.monotonic() - last_consumed <= timeout_s:
                records = consumer.consume(min(BATCH, args.messages - count), 0.1)
                now = time.monotonic()
                got = 0
                for msg in records:
                    if msg.error() is not None:
                        continue
                    got += 1
                    key, value = msg.key(), msg.value()
                    size += (len(key) if key else 0) + (len(value) if value else 0)
                if got:
                    last_consumed = now
                    count += got
                    progress.advance(got)
                if (now - last_report) * 1000 >= args.reporting_interval and got:
                    if args.show_detailed_stats:
                        print(_detailed_line(fmt, last_report, now, start_wall - start, size,
                                             last_size, count, last_count, join["round"]),
                              flush=True)
                    join["round"] = 0.0
                    last_report, last_count, last_size = now, count, size
        end, end_wall = time.monotonic(), time.time()
        if count < args.messages:
            print("WARNING: Exiting before consuming the expected number of messages: "
                  f"timeout ({args.timeout} ms) exceeded. You can use the --timeout option "
                  "to increase the timeout.", flush=True)
        if args.print_metrics:
            statistics.wait(consumer)
    finally:
        consumer.close()
    elapsed = max(end - start, 1e-9)
    fetch_s = elapsed - join["total"]
    if not args.show_detailed_stats:
        mb = size / MB
        print(f"{fmt(start_wall)}, {fmt(end_wall)}, {mb:.4f}, {mb / elapsed:.4f}, {count}, "
              f"{count / elapsed:.4f}, {int(join['total'] * 1000)}, {int(fetch_s * 1000)}, "
              f"{_rate(mb, fetch_s):.4f}, {_rate(count, fetch_s):.4f}", flush=True)
    if args.print_metrics:
        print(statistics.table("consumer-fetch-manager-metrics", {
            "records-consumed-total": "rxmsgs", "bytes-consumed-total": "rxmsg_bytes",
            "fetch-total": "tx", "incoming-byte-total": "rx_bytes",
        }, {}))
    return 0


def _rate(amount: float, seconds: float) -> float:
    return amount / seconds if seconds > 0 else 0.0


def _detailed_line(fmt, since: float, now: float, wall_offset: float, size: int,
                   last_size: int, count: int, last_count: int, join_round: float) -> str:
    elapsed = max(now - since, 1e-9)
    interval_mb = (size - last_size) / MB
    fetch_s = elapsed - join_round
    return (f"{fmt(now + wall_offset)}, 0, {size / MB:.4f}, {interval_mb / elapsed:.4f}, "
            f"{count}, {(count - last_count) / elapsed:.4f}, {int(join_round * 1000)}, "
            f"{int(fetch_s * 1000)}, {_rate(interval_mb, fetch_s):.4f}, "
            f"{_rate(count - last_count, fetch_s):.4f}")
