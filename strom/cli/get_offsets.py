"""Print partition offsets (like Kafka's kafka-get-offsets.sh), one `topic:partition:offset`
per line, sorted by topic and partition.

--time picks which offset:
  -1 or latest          the log end offset (the offset the next record will get)
  -2 or earliest        the log start offset
  -3 or max-timestamp   the offset of the record with the largest timestamp
  <ms>                  the first offset whose timestamp is at or after <ms>
A partition with no such offset (e.g. a timestamp after the newest record) is left out.

--topic-partitions takes a comma-separated list of TOPIC_REGEX[:PARTITIONS] patterns where
PARTITIONS is N, N-M (M exclusive), N- or -M; an empty regex matches every topic.

examples:
  strom get-offsets --topic orders
  strom get-offsets --topic orders --partitions 0,1 --time earliest
  strom get-offsets --topic-partitions 'orders:0-3,audit.*' --time 1700000000000
"""

from __future__ import annotations

import argparse
import re
import sys

from strom.cli import _common as common
from strom.cli._common import ToolError

TIMEOUT = 30.0
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
TIME_NAMES = {"latest": -1, "earliest": -2, "max-timestamp": -3}
_PATTERN = re.compile(r"([^:,]*)(?::(?:([0-9]*)|(?:([0-9]*)-([0-9]*))))?")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_bootstrap_argument(parser)
    common.add_command_config_argument(parser)
    parser.add_argument("--topic", help="topic name or regular expression (default: all topics)")
    parser.add_argument("--partitions", metavar="IDS",
                        help="comma-separated partition ids (default: all partitions)")
    parser.add_argument("--topic-partitions", metavar="PATTERNS",
                        help="TOPIC_REGEX[:PARTITIONS] patterns, comma-separated (see above)")
    parser.add_argument("--time", default="latest", metavar="TIME",
                        help="-1/latest (default), -2/earliest, -3/max-timestamp or a timestamp "
                             "in ms")
    parser.add_argument("--exclude-internal-topics", action="store_true",
                        help="leave out internal topics")


def parse_time(text: str) -> int:
    text = text.strip()
    if text in TIME_NAMES:
        return TIME_NAMES[text]
    try:
        value = int(text)
    except ValueError:
        raise ToolError(f"Malformed time argument {text}. Please use -1 or latest / -2 or "
                        "earliest / -3 or max-timestamp, or a timestamp in ms") from None
    if value < -3:
        raise ToolError(f"--time {value} (tiered storage offsets) is not supported")
    return value


def _offset_spec(time_value: int):
    from confluent_kafka.admin import OffsetSpec

    if time_value == -1:
        return OffsetSpec.latest()
    if time_value == -2:
        return OffsetSpec.earliest()
    if time_value == -3:
        return OffsetSpec.max_timestamp()
    return OffsetSpec.for_timestamp(time_value)


def _compile(regex: str) -> re.Pattern:
    try:
        return re.compile(regex)
    except re.error as e:
        raise ToolError(f"invalid topic regular expression {regex!r}: {e}") from None


def build_filter(args: argparse.Namespace):
    """A predicate (topic, partition) -> bool from --topic/--partitions/--topic-partitions."""
    if args.topic_partitions is not None:
        if args.topic is not None or args.partitions is not None:
            raise ToolError("--topic-partitions cannot be used with --topic or --partitions")
        rules = []
        for spec in args.topic_partitions.split(","):
            m = _PATTERN.fullmatch(spec.strip())
            if m is None:
                raise ToolError(f"Invalid topic-partition pattern: {spec}")
            regex, single, low, high = m.groups()
            topic_re = _compile(regex or ".*")
            if single:
                lo, hi = int(single), int(single) + 1
            elif low or high:
                lo, hi = int(low or 0), int(high) if high else None
            else:
                lo, hi = 0, None
            rules.append((topic_re, lo, hi))
        return lambda t, p: any(r.fullmatch(t) and lo <= p and (hi is None or p < hi)
                                for r, lo, hi in rules)
    topic_re = _compile(args.topic if args.topic is not None else ".*")
    wanted: set[int] | None = None
    if args.partitions:
        try:
            wanted = {int(x) for x in args.partitions.split(",") if x.strip()}
        except ValueError:
            raise ToolError(f"--partitions expects comma-separated ids, got "
                            f"{args.partitions!r}") from None
    return lambda t, p: bool(topic_re.fullmatch(t)) and (wanted is None or p in wanted)


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient

    try:
        accept = build_filter(args)
        spec = _offset_spec(parse_time(args.time))
        admin = AdminClient(common.client_config(args.bootstrap_server, args.command_config))
        metadata = admin.list_topics(timeout=TIMEOUT)
        wanted = sorted(
            (name, p)
            for name, topic in metadata.topics.items()
            if not (args.exclude_internal_topics and name in INTERNAL_TOPICS)
            for p in topic.partitions
            if accept(name, p)
        )
        if not wanted:
            raise ToolError("Could not match any topic-partitions with the specified filters")
        futures = admin.list_offsets({TopicPartition(t, p): spec for t, p in wanted},
                                     request_timeout=TIMEOUT)
        by_key = {(tp.topic, tp.partition): f for tp, f in futures.items()}
        for topic, partition in wanted:
            try:
                info = by_key[(topic, partition)].result(timeout=TIMEOUT + 10)
            except KafkaException as e:
                print(f"Skip getting offsets for topic-partition {topic}-{partition} due to "
                      f"error: {common.error_text(e)}", file=sys.stderr)
                continue
            if info.offset >= 0:  # a negative offset means "no such offset"
                print(f"{topic}:{partition}:{info.offset}")
    except (*common.client_errors(), TimeoutError) as e:
        print(f"Error occurred: {common.error_text(e)}", file=sys.stderr)
        return 1
    return 0
