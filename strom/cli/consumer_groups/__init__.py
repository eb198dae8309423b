"""List, describe and delete consumer groups, and reset or delete their committed offsets
(like Kafka's kafka-consumer-groups.sh).

Exactly one action is required: --list, --describe, --delete, --reset-offsets or
--delete-offsets.

--describe shows, per group (--group G, repeatable, or --all-groups), one of:
  (default, --offsets)  GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID
                        HOST CLIENT-ID: every assigned or committed partition; LOG-END-OFFSET
                        is the high watermark, "-" marks an unknown value
  --members             GROUP CONSUMER-ID HOST CLIENT-ID #PARTITIONS (+ ASSIGNMENT with
                        --verbose)
  --state               GROUP COORDINATOR (ID) ASSIGNMENT-STRATEGY STATE #MEMBERS

--reset-offsets needs a scope (--topic T[:P,P...], repeatable, or --all-topics: the topics the
group has committed offsets for) and one of:
  --to-earliest  --to-latest  --to-current  --to-offset N  --shift-by N
  --to-datetime YYYY-MM-DDTHH:mm:SS.sss (UTC unless a zone is given: Z, +hh:mm, +hhmm, +hh)
  --by-duration PnDTnHnMnS (that long before now)
--to-offset and --shift-by are clamped to the partition's [earliest, latest] offsets. It only
prints the plan (--dry-run, the default) unless --execute is given, and is refused while the
group has members.

examples:
  strom consumer-groups --list
  strom consumer-groups --list --state Stable
  strom consumer-groups --describe --group audit
  strom consumer-groups --describe --all-groups --members --verbose
  strom consumer-groups --describe --group audit --state
  strom consumer-groups --reset-offsets --group audit --topic orders --to-earliest --execute
  strom consumer-groups --reset-offsets --group audit --topic orders:0,1 --shift-by -10 --dry-run
  strom consumer-groups --reset-offsets --group audit --all-topics \\
      --to-datetime 2024-01-01T00:00:00.000 --execute
  strom consumer-groups --delete-offsets --group audit --topic orders
  strom consumer-groups --delete --group audit
"""

from __future__ import annotations

import argparse
import sys

from strom.cli import _common as common
from strom.cli._common import ToolError
from strom.cli.consumer_groups import delete, describe, reset_offsets
from strom.cli.consumer_groups.admin import GroupAdmin, err, kafka_message
from strom.cli.consumer_groups.options import ACTIONS, SCENARIO_OPTIONS, check_args

# One module per part of the command: options.py (what goes with what, value parsers),
# admin.py (the AdminClient look-ups and texts the actions share), describe.py (--list,
# --describe), reset_offsets.py, delete.py (--delete, --delete-offsets).
_ACTIONS = {
    "list": describe.do_list,
    "describe": describe.do_describe,
    "delete": delete.do_delete,
    "reset_offsets": reset_offsets.do_reset_offsets,
    "delete_offsets": delete.do_delete_offsets,
}

DEFAULT_TIMEOUT_MS = 30000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_bootstrap_argument(parser)
    common.add_command_config_argument(parser)
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_MS, metavar="MS",
                        help=f"timeout of each request (default: {DEFAULT_TIMEOUT_MS})")
    common.add_actions(parser, {
        "--list": "list consumer groups",
        "--describe": "describe groups: offsets and lag (default), --members or --state",
        "--delete": "delete groups (their committed offsets and metadata)",
        "--reset-offsets": "reset the committed offsets of inactive groups",
        "--delete-offsets": "delete the committed offsets of one group for --topic",
    })
    parser.add_argument("--group", action="append", default=[], metavar="GROUP",
                        help="the consumer group (repeatable)")
    parser.add_argument("--all-groups", action="store_true", help="apply to all groups")
    parser.add_argument("--topic", action="append", default=[], metavar="TOPIC[:P,P...]",
                        help="for --reset-offsets and --delete-offsets: a topic, optionally "
                             "with partitions (orders:0,1); repeatable")
    common.add_flags(parser, {
        "--all-topics": "for --reset-offsets: every topic the group has offsets for",
        "--offsets": "with --describe: offsets and lag per partition (the default)",
        "--members": "with --describe: the members of the group",
    })
    parser.add_argument("--state", nargs="?", const="", default=None, metavar="STATES",
                        help="with --describe: the state of the group; with --list: show each "
                             "group's state, or only groups in STATES (comma-separated, e.g. "
                             "Stable,Empty)")
    parser.add_argument("--type", nargs="?", const="", default=None, metavar="TYPES",
                        help="with --list: show each group's type, or only groups of TYPES "
                             "(classic, consumer)")
    parser.add_argument("--verbose", action="store_true",
                        help="with --describe: more columns (--members: ASSIGNMENT)")
    scenarios = parser.add_mutually_exclusive_group()
    for dest, keywords in SCENARIO_OPTIONS.items():
        scenarios.add_argument(common.option_name(dest), **keywords)
    mode = parser.add_mutually_exclusive_group()
    common.add_flags(mode, {
        "--dry-run": "only print the new offsets (the default)",
        "--execute": "commit the new offsets",
    })


# -- entry point -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    action = common.chosen_action(args, ACTIONS)
    try:
        check_args(args, action)
    except ToolError as e:
        print(str(e), file=sys.stderr)
        return 1
    try:
        conf = common.client_config(args.bootstrap_server, args.command_config)
        tool = GroupAdmin(AdminClient(conf), args, conf)
        return _ACTIONS[action](tool)
    except (*common.client_errors(), TimeoutError) as e:
        reason = kafka_message(e) if isinstance(e, KafkaException) else common.error_text(e)
        err(f"Executing consumer group command failed due to {reason}")
        return 1

