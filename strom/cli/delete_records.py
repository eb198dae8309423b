"""Delete the records of partitions below an offset (like Kafka's kafka-delete-records.sh).

Each partition's log start offset moves to the offset given (-1: its high watermark);
consumers can no longer read below it and whole segments below it are deleted. The
partitions' leaders answer once every replica has moved its start offset.

example:
  strom delete-records --bootstrap-server 127.0.0.1:9092 --offset-json-file delete.json

delete.json: {"partitions": [{"topic": "orders", "partition": 0, "offset": 5}], "version": 1}
"""

from __future__ import annotations

import argparse
import json
import sys

from strom.cli._common import (
    ToolError,
    add_bootstrap_argument,
    add_command_config_argument,
    client_config,
    client_errors,
    error_text,
    read_text,
)
from strom.cli.leader_election import describe_error

TIMEOUT = 30.0  # seconds: Kafka's admin client default.api.timeout.ms is 60 s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bootstrap_argument(parser)
    parser.add_argument("--offset-json-file", metavar="FILE",
                        help='JSON file with the offset per partition: {"partitions": '
                             '[{"topic": "foo", "partition": 1, "offset": 1}], "version": 1} '
                             "(required)")
    add_command_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    try:
        if args.offset_json_file is None:
            raise ToolError("Missing required option(s): --offset-json-file")
        wanted = parse_offset_json(read_text(args.offset_json_file))
        return _delete(client_config(args.bootstrap_server, args.command_config), wanted)
    except client_errors() as e:
        print(f"Error: {error_text(e)}", file=sys.stderr)
        return 1


def parse_offset_json(text: str) -> list[tuple[str, int, int]]:
    """Kafka's offset file, version 1 (the default when "version" is left out):
    {"partitions": [{"topic": "t", "partition": 0, "offset": 5}], "version": 1}."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ToolError("The input string is not a valid JSON") from None
    if not isinstance(data, dict):
        raise ToolError("The input string is not a valid JSON object")
    version = data.get("version", 1)
    if version != 1:
        raise ToolError(f"Not supported version field value {version}")
    if "partitions" not in data:
        raise ToolError("Missing partitions field")
    entries = data["partitions"]
    if not isinstance(entries, list):
        raise ToolError('"partitions" must be an array')
    out: list[tuple[str, int, int]] = []
    for i, e in enumerate(entries):
        ok = isinstance(e, dict) and isinstance(e.get("topic"), str) and all(
            isinstance(e.get(k), int) and not isinstance(e.get(k), bool)
            for k in ("partition", "offset"))
        if not ok:
            raise ToolError(f'Entry {i} of "partitions" needs a string "topic" and integer '
                            f'"partition" and "offset": {json.dumps(e)}')
        out.append((e["topic"], e["partition"], e["offset"]))
    tps = [(t, p) for t, p, _ in out]
    dupes = sorted({tp for tp in tps if tps.count(tp) > 1})
    if dupes:
        raise ToolError("Offset json file contains duplicate topic partitions: "
                        + ",".join(f"{t}-{p}" for t, p in dupes))
    return out


def _delete(conf: dict, wanted: list[tuple[str, int, int]]) -> int:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(conf)
    print("Executing records delete operation")
    futures = admin.delete_records([TopicPartition(t, p, o) for t, p, o in wanted],
                                   request_timeout=TIMEOUT, operation_timeout=TIMEOUT)
    print("Records delete operation completed:")
    failed = 0
    for tp in sorted(futures, key=lambda tp: (tp.topic, tp.partition)):
        try:
            low = futures[tp].result(timeout=TIMEOUT + 10).low_watermark
            print(f"partition: {tp.topic}-{tp.partition}\tlow_watermark: {low}")
        except client_errors() as e:
            failed += 1
            print(f"partition: {tp.topic}-{tp.partition}\terror: {describe_error(e)}")
    return 1 if failed else 0
