"""Console producer (like Kafka's kafka-console-producer.sh): one record per line of stdin.

Reader properties (--property KEY=VALUE, as in Kafka's LineMessageReader):
  parse.key=true             split each line into key and value at key.separator
  key.separator=SEP          default: a tab
  parse.headers=true         lines start with headers: h1:v1,h2:v2<headers.delimiter>...
  headers.delimiter=SEP      between the headers and the key/value (default: a tab)
  headers.separator=SEP      between headers (default: ,)
  headers.key.separator=SEP  between a header's key and value (default: :)
  null.marker=TEXT           a key, value or header value equal to this is sent as null
  ignore.error=true          a line without a separator becomes a value without key

All input is read before exiting; the exit status is 1 if any record was not delivered.

examples:
  echo hello | strom produce --topic greetings
  printf 'k1:v1\\nk2:v2\\n' | strom produce --topic t --property parse.key=true \\
      --property key.separator=:
"""

from __future__ import annotations

import argparse
import sys
import time

from strom.cli import _common as common
from strom.cli._common import ToolError
from strom.protocol.batch import Compression

CODECS = tuple(str(c) for c in Compression)  # the producer's compression.type names
READER_PROPERTIES = {
    "parse.key", "key.separator", "parse.headers", "headers.delimiter", "headers.separator",
    "headers.key.separator", "null.marker", "ignore.error",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_bootstrap_argument(parser)
    parser.add_argument("--topic", required=True, help="topic to produce to")
    common.add_client_settings_arguments(parser, "producer",
                                         "line reader property (see above; repeatable)")
    parser.add_argument("--compression-codec", nargs="?", const="gzip", choices=CODECS,
                        help="compression codec (gzip when given without a value)")
    parser.add_argument("--request-required-acks", metavar="ACKS",
                        help="acks: -1 or all, 0, 1 (default: -1)")
    parser.add_argument("--partition", type=int, metavar="N",
                        help="send every record to this partition (default: the partitioner)")
    parser.add_argument("--sync", action="store_true",
                        help="wait for each record to be acknowledged before reading the next")


class LineReader:
    """Turns one input line (bytes, without its line ending) into (key, value, headers)."""

    def __init__(self, props: dict[str, str]) -> None:
        unknown = set(props) - READER_PROPERTIES
        if unknown:
            raise ToolError(f"unknown --property: {', '.join(sorted(unknown))}")

        def flag(name: str) -> bool:
            return props.get(name, "false").strip().lower() == "true"

        def sep(name: str, default: str) -> bytes:
            return props.get(name, default).encode()

        self.parse_key = flag("parse.key")
        self.parse_headers = flag("parse.headers")
        self.ignore_error = flag("ignore.error")
        self.key_sep = sep("key.separator", "\t")
        self.headers_delim = sep("headers.delimiter", "\t")
        self.headers_sep = sep("headers.separator", ",")
        self.header_key_sep = sep("headers.key.separator", ":")
        marker = props.get("null.marker")
        self.null_marker = marker.encode() if marker is not None else None
        for name, value in (("key.separator", self.key_sep),
                            ("headers.delimiter", self.headers_delim),
                            ("headers.separator", self.headers_sep),
                            ("headers.key.separator", self.header_key_sep)):
            if not value:
                raise ToolError(f"{name} may not be empty")
            if value == self.null_marker:
                raise ToolError(f"null.marker and {name} may not be equal")
        if len({self.headers_delim, self.headers_sep, self.header_key_sep}) < 3:
            raise ToolError("headers.delimiter, headers.separator and headers.key.separator "
                            "must differ")

    def _split(self, line: bytes, start: int, sep: bytes, what: str, number: int):
        index = line.find(sep, start)
        if index < 0:
            if self.ignore_error:
                return None
            raise ToolError(f"No {what} found on line number {number}: "
                            f"'{line.decode(errors='replace')}'")
        return line[start:index]

    def _nullable(self, data: bytes | None) -> bytes | None:
        return None if data is None or data == self.null_marker else data

    def parse(self, line: bytes, number: int):
        pos = 0
        headers_part = key = None
        if self.parse_headers:
            headers_part = self._split(line, pos, self.headers_delim, "headers delimiter", number)
            if headers_part is not None:
                pos += len(headers_part) + len(self.headers_delim)
        if self.parse_key:
            key = self._split(line, pos, self.key_sep, "key separator", number)
            if key is not None:
                pos += len(key) + len(self.key_sep)
        value = line[pos:]
        headers = None
        if headers_part is not None and headers_part != self.null_marker:
            headers = [self._header(pair, number) for pair in headers_part.split(self.headers_sep)]
        return self._nullable(key), self._nullable(value), headers

    def _header(self, pair: bytes, number: int) -> tuple[str, bytes | None]:
        name, sep, value = pair.partition(self.header_key_sep)
        if not sep:
            if self.ignore_error:
                return pair.decode(errors="replace"), None
            raise ToolError(f"No header key separator found in pair "
                            f"'{pair.decode(errors='replace')}' on line number {number}")
        if name == self.null_marker:
            raise ToolError(f"Header keys should not be equal to the null marker "
                            f"'{self.null_marker.decode()}' as they can't be null")
        return name.decode(errors="replace"), self._nullable(value)


def _producer_config(args: argparse.Namespace) -> dict[str, object]:
    user = {**common.load_properties(args.producer_config),
            **common.parse_key_values(args.producer_property, "--producer-property")}
    # Kafka's producer defaults: acks=all, a record gives up after 2 minutes.
    defaults: dict[str, object] = {"acks": "-1"}
    if "delivery.timeout.ms" not in user and "message.timeout.ms" not in user:
        defaults["message.timeout.ms"] = 120000
    conf = common.client_config(args.bootstrap_server, None, defaults, overrides=user)
    if args.compression_codec is not None:
        conf["compression.codec"] = args.compression_codec
    if args.request_required_acks is not None:
        conf["acks"] = args.request_required_acks
    return conf


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException, Producer

    failures = 0

    def on_delivery(err, msg) -> None:
        nonlocal failures
        if err is not None:
            failures += 1
            key = msg.key()
            value = msg.value()
            print(f"Error when sending message to topic {msg.topic()} with key: "
                  f"{'null' if key is None else f'{len(key)} bytes'}, value: "
                  f"{'null' if value is None else f'{len(value)} bytes'} "
                  f"with error: {err.str()}", file=sys.stderr)

    try:
        reader = LineReader(common.parse_key_values(args.property, "--property"))
        conf = _producer_config(args)
        producer = Producer(conf)
    except (ToolError, KafkaException, ValueError) as e:
        print(f"ERROR: {common.error_text(e)}", file=sys.stderr)
        return 1
    # How long librdkafka may keep trying one record; flush waits a little longer than that.
    timeout_ms = conf.get("message.timeout.ms", conf.get("delivery.timeout.ms", 300000))
    delivery_timeout = float(timeout_ms) / 1000 + 10
    extra = {} if args.partition is None else {"partition": args.partition}
    status = 0
    try:
        for number, raw in enumerate(sys.stdin.buffer, 1):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if line.endswith(b"\r"):
                line = line[:-1]
            key, value, headers = reader.parse(line, number)
            if headers:
                extra["headers"] = headers
            else:
                extra.pop("headers", None)
            _produce(producer, args.topic, key, value, extra, on_delivery, delivery_timeout)
            if args.sync:
                producer.flush(delivery_timeout)
    except (ToolError, KafkaException) as e:
        print(f"ERROR: {common.error_text(e)}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    remaining = producer.flush(delivery_timeout)
    if remaining:
        print(f"ERROR: {remaining} record(s) were not delivered before the timeout",
              file=sys.stderr)
    return 1 if failures or remaining else status


def _produce(producer, topic, key, value, extra, on_delivery, timeout: float) -> None:
    """produce(), waiting (bounded) while librdkafka's local queue is full."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery, **extra)
            producer.poll(0)
            return
        except BufferError:
            if time.monotonic() >= deadline:
                raise ToolError("the local producer queue stayed full; is the broker up?") from None
            producer.poll(0.1)
