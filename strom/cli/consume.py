"""Console consumer (like Kafka's kafka-console-consumer.sh): print records to stdout.

Without --group the consumer assigns itself all partitions of the topic (or only
--partition) and commits nothing. With --group it joins that consumer group and commits.
Where to start: --from-beginning, or --offset with --partition; otherwise the end.

Formatter properties (--property KEY=VALUE, as in Kafka's DefaultMessageFormatter):
  print.timestamp=true   CreateTime:<ms> / LogAppendTime:<ms> / NO_TIMESTAMP
  print.partition=true   Partition:<n>
  print.offset=true      Offset:<n>
  print.headers=true     k1:v1,k2:v2 (or NO_HEADERS)
  print.key=true         the key
  print.value=false      leave out the value (printed by default)
  key.separator=SEP      between fields (default: a tab)
  line.separator=SEP     after each record (default: a newline)
  headers.separator=SEP  between headers (default: ,)
  null.literal=TEXT      printed for a null key, value or header value (default: null)

At the end "Processed a total of N messages" goes to stderr.

examples:
  strom consume --topic greetings --from-beginning --max-messages 10
  strom consume --topic t --partition 0 --offset 42 --property print.key=true \\
      --property print.offset=true --timeout-ms 5000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from strom.cli import _common as common
from strom.cli._common import ToolError

METADATA_TIMEOUT = 30.0
BATCH = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_bootstrap_argument(parser)
    parser.add_argument("--topic", required=True, help="topic to consume from")
    parser.add_argument("--partition", type=int, metavar="N", help="consume only this partition")
    parser.add_argument("--offset", metavar="OFFSET",
                        help="with --partition: earliest, latest (default) or an offset")
    parser.add_argument("--from-beginning", action="store_true",
                        help="start at the earliest offset (a group starts at its committed "
                             "offset when it has one)")
    parser.add_argument("--group", help="consumer group id (default: no group, no commits)")
    parser.add_argument("--max-messages", type=int, metavar="N",
                        help="exit after this many records")
    parser.add_argument("--timeout-ms", type=int, metavar="MS",
                        help="exit when no record arrived for this long")
    common.add_client_settings_arguments(parser, "consumer",
                                         "formatter property (see above; repeatable)")
    parser.add_argument("--isolation-level", default="read_uncommitted",
                        choices=("read_uncommitted", "read_committed"),
                        help="read_committed skips aborted transactional records "
                             "(default: read_uncommitted)")


class Formatter:
    """Kafka's DefaultMessageFormatter layout, writing bytes."""

    KNOWN = {"print.timestamp", "print.key", "print.value", "print.partition", "print.offset",
             "print.headers", "key.separator", "line.separator", "headers.separator",
             "null.literal"}

    def __init__(self, props: dict[str, str]) -> None:
        unknown = set(props) - self.KNOWN
        if unknown:
            print(f"WARNING: ignoring unknown --property: {', '.join(sorted(unknown))}",
                  file=sys.stderr)

        def flag(name: str, default: bool = False) -> bool:
            return props[name].strip().lower() == "true" if name in props else default

        self.fields = [name for name in ("timestamp", "partition", "offset", "headers", "key")
                       if flag(f"print.{name}")]
        self.print_value = flag("print.value", True)
        self.key_sep = props.get("key.separator", "\t").encode()
        self.line_sep = props.get("line.separator", "\n").encode()
        self.headers_sep = props.get("headers.separator", ",").encode()
        self.null = props.get("null.literal", "null").encode()
        from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

        self.timestamp_types = {TIMESTAMP_CREATE_TIME: "CreateTime",
                                TIMESTAMP_LOG_APPEND_TIME: "LogAppendTime"}

    def format(self, msg) -> bytes:
        parts = [getattr(self, f"_{name}")(msg) for name in self.fields]
        if self.print_value:
            value = msg.value()
            parts.append(self.null if value is None else value)
        if not parts:
            return b""
        # Kafka ends the record with line.separator whatever was printed last.
        return self.key_sep.join(parts) + self.line_sep

    def _timestamp(self, msg) -> bytes:
        kind, ts = msg.timestamp()
        name = self.timestamp_types.get(kind)
        return f"{name}:{ts}".encode() if name else b"NO_TIMESTAMP"

    def _partition(self, msg) -> bytes:
        return f"Partition:{msg.partition()}".encode()

    def _offset(self, msg) -> bytes:
        return f"Offset:{msg.offset()}".encode()

    def _headers(self, msg) -> bytes:
        headers = msg.headers()
        if not headers:
            return b"NO_HEADERS"
        return self.headers_sep.join(
            name.encode() + b":" + (self.null if value is None else value)
            for name, value in headers)

    def _key(self, msg) -> bytes:
        key = msg.key()
        return self.null if key is None else key


def _start_offset(args: argparse.Namespace) -> int:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

    if args.offset is None:
        return OFFSET_BEGINNING if args.from_beginning else OFFSET_END
    text = args.offset.strip().lower()
    if text == "earliest":
        return OFFSET_BEGINNING
    if text == "latest":
        return OFFSET_END
    if text.isdigit():
        return int(text)
    raise ToolError(f"--offset must be earliest, latest or a non-negative number, "
                    f"got {args.offset!r}")


def _check_args(args: argparse.Namespace) -> None:
    if args.offset is not None and args.partition is None:
        raise ToolError("The partition is required when offset is specified.")
    if args.offset is not None and args.from_beginning:
        raise ToolError("Options from-beginning and offset cannot be specified together.")
    if args.max_messages is not None and args.max_messages < 1:
        raise ToolError("--max-messages must be at least 1")
    if args.timeout_ms is not None and args.timeout_ms < 0:
        raise ToolError("--timeout-ms must not be negative")


def _consumer_config(args: argparse.Namespace) -> dict[str, object]:
    conf = common.client_config(
        args.bootstrap_server, args.consumer_config,
        {"enable.partition.eof": False,
         "auto.offset.reset": "earliest" if args.from_beginning else "latest"},
        overrides=common.parse_key_values(args.consumer_property, "--consumer-property"))
    conf["isolation.level"] = args.isolation_level
    if args.group:
        conf["group.id"] = args.group
    else:
        # confluent-kafka insists on a group.id; with assign() and no commits the group is
        # never joined, so a throwaway name stays invisible to the broker's coordinator.
        conf["group.id"] = f"strom-console-consumer-{uuid.uuid4().hex[:12]}"
        conf["enable.auto.commit"] = False
        conf["enable.auto.offset.store"] = False
    return conf


def _start(consumer, args: argparse.Namespace) -> None:
    from confluent_kafka import TopicPartition

    start = _start_offset(args)
    if args.partition is not None:
        consumer.assign([TopicPartition(args.topic, args.partition, start)])
        return
    if args.group:
        consumer.subscribe([args.topic])
        return
    metadata = consumer.list_topics(args.topic, timeout=METADATA_TIMEOUT).topics.get(args.topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        reason = f": {metadata.error.str()}" if metadata is not None and metadata.error else ""
        raise ToolError(f"Topic '{args.topic}' does not exist{reason}")
    consumer.assign([TopicPartition(args.topic, p, start) for p in sorted(metadata.partitions)])


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, KafkaException

    try:
        _check_args(args)
        formatter = Formatter(common.parse_key_values(args.property, "--property"))
        consumer = Consumer(_consumer_config(args))
    except (ToolError, KafkaException, ValueError) as e:
        print(f"ERROR: {common.error_text(e)}", file=sys.stderr)
        return 1

    count = 0
    status = 0
    out = sys.stdout.buffer
    timeout = None if args.timeout_ms is None else args.timeout_ms / 1000
    try:
        _start(consumer, args)
        last_record = time.monotonic()
        while args.max_messages is None or count < args.max_messages:
            wait = 1.0 if timeout is None else max(0.0, min(1.0, last_record + timeout
                                                             - time.monotonic()))
            want = BATCH if args.max_messages is None else min(BATCH, args.max_messages - count)
            messages = consumer.consume(num_messages=want, timeout=wait)
            records = []
            for msg in messages:
                err = msg.error()
                if err is None:
                    records.append(formatter.format(msg))
                elif err.fatal():
                    raise KafkaException(err)
                else:
                    print(f"WARNING: {err.str()}", file=sys.stderr)
            if records:
                out.write(b"".join(records))
                out.flush()
                count += len(records)
                last_record = time.monotonic()
            elif timeout is not None and time.monotonic() - last_record >= timeout:
                break
    except (ToolError, KafkaException) as e:
        print(f"ERROR: {common.error_text(e)}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # Nobody reads our output any more (e.g. `| head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("Unable to write to standard out, closing consumer.", file=sys.stderr)
    finally:
        consumer.close()
        print(f"Processed a total of {count} messages", file=sys.stderr)
    return status
