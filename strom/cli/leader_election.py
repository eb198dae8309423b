"""Elect partition leaders (like Kafka's kafka-leader-election.sh).

A preferred election makes each partition's preferred replica (the first of its assignment)
the leader again, if it is live and in sync; an unclean one gives a partition without a
live leader one, even an out-of-sync replica (acknowledged records may be lost). Exactly one
of --topic/--partition, --all-topic-partitions and --path-to-json-file picks the partitions.

examples:
  strom leader-election --election-type preferred --all-topic-partitions
  strom leader-election --election-type preferred --topic orders --partition 0
  strom leader-election --election-type unclean --path-to-json-file elect.json

elect.json: {"partitions": [{"topic": "orders", "partition": 0}, {"topic": "audit", "partition": 2}]}
"""

from __future__ import annotations

import argparse
import json
import sys

from strom.cli import _common as common
from strom.cli._common import ToolError

TIMEOUT = 30.0  # seconds, as Kafka's tool
ELECTION_TYPES = ("PREFERRED", "UNCLEAN")
ELECTION_NOT_NEEDED = 84


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_bootstrap_argument(parser)
    parser.add_argument("--election-type", type=str.upper, choices=ELECTION_TYPES,
                        metavar="preferred|unclean",
                        help="preferred: move leadership to the preferred replica where it is "
                             "live, in sync and not the leader; unclean: elect a leader for "
                             "partitions without a live one (required)")
    parser.add_argument("--topic", help="the topic of the partition to elect a leader for "
                                        "(with --partition)")
    parser.add_argument("--partition", type=int, metavar="N",
                        help="the partition to elect a leader for (with --topic)")
    parser.add_argument("--all-topic-partitions", action="store_true",
                        help="every partition of the cluster")
    parser.add_argument("--path-to-json-file", metavar="FILE",
                        help='JSON file listing the partitions: {"partitions": [{"topic": '
                             '"foo", "partition": 1}, ...]}')
    common.add_command_config_argument(parser)
    parser.add_argument("--admin.config", dest="admin_config", metavar="FILE",
                        help="deprecated name of --command-config")


def run(args: argparse.Namespace) -> int:
    try:
        _check_args(args)
        wanted = _wanted_partitions(args)
        config_file = args.command_config
        if args.admin_config:
            print("Option --admin.config has been deprecated and will be removed in a future "
                  "version. Use --command-config instead.", file=sys.stderr)
            config_file = args.admin_config
        conf = common.client_config(args.bootstrap_server, config_file)
        return _elect(conf, args.election_type, wanted)
    except common.client_errors() as e:
        print(f"Error: {common.error_text(e)}", file=sys.stderr)
        return 1
    except TimeoutError:
        print("Timeout waiting for election results", file=sys.stderr)
        return 1


def _check_args(args: argparse.Namespace) -> None:
    if args.election_type is None:
        raise ToolError("Missing required option(s): --election-type")
    if args.admin_config and args.command_config:
        raise ToolError("Option --admin.config can't be used with option --command-config")
    chosen = [args.topic is not None, args.all_topic_partitions,
              args.path_to_json_file is not None]
    if sum(chosen) != 1:
        raise ToolError("One and only one of the following options is required: --topic, "
                        "--all-topic-partitions, --path-to-json-file")
    if args.topic is not None and args.partition is None:
        raise ToolError("Missing required option(s): --partition")
    if args.topic is None and args.partition is not None:
        raise ToolError("Option --partition is only allowed if --topic is used")


def _wanted_partitions(args: argparse.Namespace) -> list[tuple[str, int]] | None:
    """The partitions asked for, or None for every partition of the cluster."""
    if args.all_topic_partitions:
        return None
    if args.topic is not None:
        return [(args.topic, args.partition)]
    return parse_election_json(common.read_text(args.path_to_json_file))


def parse_election_json(text: str) -> list[tuple[str, int]]:
    """Kafka's replica election file: {"partitions": [{"topic": "t", "partition": 0}]}."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ToolError("Replica election data is empty or not valid JSON") from None
    if not isinstance(data, dict):
        raise ToolError("Replica election data must be a JSON object")
    if "partitions" not in data:
        raise ToolError('Replica election data is missing "partitions" field')
    entries = data["partitions"]
    if not isinstance(entries, list):
        raise ToolError('"partitions" in the replica election data must be an array')
    out: list[tuple[str, int]] = []
    for i, entry in enumerate(entries):
        topic = entry.get("topic") if isinstance(entry, dict) else None
        partition = entry.get("partition") if isinstance(entry, dict) else None
        if not isinstance(topic, str) or not isinstance(partition, int) or \
                isinstance(partition, bool):
            raise ToolError(f"Entry {i} of \"partitions\" needs a string \"topic\" and an "
                            f"integer \"partition\": {json.dumps(entry)}")
        out.append((topic, partition))
    dupes = sorted({tp for tp in out if out.count(tp) > 1})
    if dupes:
        raise ToolError("Replica election data contains duplicate partitions: "
                        + ", ".join(f"{t}-{p}" for t, p in dupes))
    return out


def _elect(conf: dict, election_type: str, wanted: list[tuple[str, int]] | None) -> int:
    from confluent_kafka import ElectionType, TopicPartition
    from confluent_kafka.admin import AdminClient

    # confluent-kafka 2.16's elect_leaders refuses its request_timeout/operation_timeout
    # arguments (a TypeError from the C binding), so the timeout is the client's
    # socket.timeout.ms
    admin = AdminClient({"socket.timeout.ms": int(TIMEOUT * 1000), **conf})
    partitions = None if wanted is None else [TopicPartition(t, p) for t, p in wanted]
    future = admin.elect_leaders(ElectionType[election_type], partitions)
    results = future.result(timeout=TIMEOUT + 10)

    succeeded: list[str] = []
    noop: list[str] = []
    failed: list[tuple[str, object]] = []
    for tp in sorted(results, key=lambda tp: (tp.topic, tp.partition)):
        name = f"{tp.topic}-{tp.partition}"
        exc = results[tp]
        if exc is None:
            succeeded.append(name)
        elif _code(exc) == ELECTION_NOT_NEEDED:
            noop.append(name)
        else:
            failed.append((name, exc))
    if succeeded:
        print(f"Successfully completed leader election ({election_type}) for partitions "
              + ", ".join(succeeded))
    if noop:
        print("Valid replica already elected for partitions " + ", ".join(noop))
    for name, exc in failed:
        print(f"Error completing leader election ({election_type}) for partition: {name}: "
              f"{describe_error(exc)}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} replica(s) could not be elected", file=sys.stderr)
        return 1
    return 0


def _kafka_error(exc):
    """The confluent_kafka.KafkaError of a per-partition result: the result itself
    (confluent-kafka 2.16 gives KafkaError objects, though documented as KafkaException)
    or the one a KafkaException wraps."""
    if hasattr(exc, "code") and callable(exc.code):
        return exc
    arg = exc.args[0] if getattr(exc, "args", None) else None
    return arg if arg is not None and hasattr(arg, "code") else None


def _code(exc) -> int | None:
    err = _kafka_error(exc)
    code = err.code() if err is not None else None
    return code if isinstance(code, int) else None


def describe_error(exc) -> str:
    """`NAME: message` with Kafka's name for a broker error code (UNKNOWN_TOPIC_OR_PARTITION),
    the way Kafka's tool prints the exception (class name, then message)."""
    err = _kafka_error(exc)
    code = _code(exc)
    text = err.str() if err is not None else common.error_text(exc)
    if code is not None and code > 0:
        from strom.protocol.errors import ErrorCode

        try:
            return f"{ErrorCode(code).name.upper()}: {text}"
        except ValueError:
            pass
    return text
