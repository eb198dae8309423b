"""The `strom` command: one sub-command per tool, each in its own module.

Every sub-command module exposes `add_arguments(parser)` and `run(args) -> int`.
Client tools (topics, produce, consume, get-offsets, ...) are Kafka clients built on
confluent-kafka; only `server` and `dump-log` touch broker internals.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "server": ("strom.cli.server", "start a broker (Kafka's server.properties names)"),
    "topics": ("strom.cli.topics", "create, list, describe, alter and delete topics"),
    "produce": ("strom.cli.produce", "console producer: one record per line of stdin"),
    "consume": ("strom.cli.consume", "console consumer: print records to stdout"),
    "get-offsets": ("strom.cli.get_offsets", "print partition offsets (earliest, latest, by time)"),
    "consumer-groups": ("strom.cli.consumer_groups", "list, describe, delete groups; reset offsets"),
    "dump-log": ("strom.cli.dump_log", "print the contents of segment and index files"),
    "leader-election": ("strom.cli.leader_election",
                        "move leadership to preferred replicas, or elect leaders uncleanly"),
    "reassign-partitions": ("strom.cli.reassign_partitions",
                            "move partition replicas between brokers"),
    "delete-records": ("strom.cli.delete_records",
                       "delete the records of partitions below an offset"),
    "log-dirs": ("strom.cli.log_dirs", "describe the log directories of brokers"),
    "configs": ("strom.cli.configs", "describe and alter topic and broker configs"),
    "transactions": ("strom.cli.transactions",
                     "list, describe and abort transactions; find hanging ones"),
    "acls": ("strom.cli.acls", "add, remove and list ACLs"),
    "producer-perf-test": ("strom.cli.producer_perf_test",
                           "producer throughput and latency test (Kafka's output)"),
    "consumer-perf-test": ("strom.cli.consumer_perf_test",
                           "consumer throughput test (Kafka's output)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `strom` parser. With `command`, only that sub-command's module is imported (the
    others are listed by name and help only): `strom server` then starts without importing
    every tool, some of which import kio's schemas at module level."""
    parser = argparse.ArgumentParser(
        prog="strom",
        description="strom: a Kafka-compatible event streaming platform.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if command is not None and name != command:
            continue
        module = importlib.import_module(module_name)
        p.description = module.__doc__
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    if getattr(args, "command_config", None):
        # the tool's own requests (beside confluent-kafka's) use the same security
        from strom.cli._common import ToolError, set_tool_properties
        try:
            set_tool_properties(args.command_config)
        except ToolError as e:
            print(e, file=sys.stderr)
            return 1
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
