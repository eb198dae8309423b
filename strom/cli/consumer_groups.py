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
import re
import socket
import struct
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

from strom.cli._common import (
    BASE_CLIENT_CONFIG,
    ToolError,
    add_bootstrap_argument,
    error_text,
    load_properties,
)

DEFAULT_TIMEOUT_MS = 30000
# librdkafka's informational (level 6) lines are noise here: it describes a group with
# ConsumerGroupDescribe (KIP-848) first and falls back to DescribeGroups for classic groups (or
# brokers without that API), and the first attempt can leave an event that it reports when the
# client closes ("Purging 1 unserved events from background queue"). Warnings and errors still
# show.
QUIET_CONFIG: dict[str, object] = {"log_level": 5}
MISSING = "-"
ACTIONS = ("list", "describe", "delete", "reset_offsets", "delete_offsets")
SCENARIOS = ("to_earliest", "to_latest", "to_current", "to_offset", "shift_by", "to_datetime",
             "by_duration")

# Kafka's names of the classic group states and group types (as kafka-consumer-groups prints
# and accepts them; matching is case-insensitive).
STATE_NAMES = ("PreparingRebalance", "CompletingRebalance", "Stable", "Dead", "Empty")
TYPE_NAMES = ("Classic", "Consumer")

# Kafka's texts (org.apache.kafka.common.protocol.Errors) for the error codes this tool meets.
KAFKA_MESSAGES = {
    3: "This server does not host this topic-partition.",
    14: "The coordinator is loading and hence can't process requests.",
    15: "The coordinator is not available.",
    16: "This is not the correct coordinator.",
    24: "The configured groupId is invalid.",
    25: "The coordinator is not aware of this member.",
    27: "The group is rebalancing, so a rejoin is needed.",
    29: "Topic authorization failed.",
    30: "Group authorization failed.",
    68: "The group is not empty.",
    69: "The group id does not exist.",
    86: "The consumer group is actively subscribed to the topic",
}
_COORDINATOR_RETRIABLE = (14, 15, 16)

# option -> the actions it may be used with (Kafka's checkInvalidArgs)
_OPTION_ACTIONS = {
    "group": ("describe", "delete", "reset_offsets", "delete_offsets"),
    "all_groups": ("describe", "delete", "reset_offsets"),
    "topic": ("reset_offsets", "delete_offsets"),
    "all_topics": ("reset_offsets",),
    "members": ("describe",),
    "offsets": ("describe",),
    "verbose": ("describe",),
    "state": ("describe", "list"),
    "type": ("list",),
    "dry_run": ("reset_offsets",),
    "execute": ("reset_offsets",),
    **{s: ("reset_offsets",) for s in SCENARIOS},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bootstrap_argument(parser)
    parser.add_argument("--command-config", metavar="FILE",
                        help="properties file with client settings (librdkafka names)")
    parser.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_MS, metavar="MS",
                        help=f"timeout of each request (default: {DEFAULT_TIMEOUT_MS})")
    actions = parser.add_mutually_exclusive_group(required=True)
    actions.add_argument("--list", action="store_true", help="list consumer groups")
    actions.add_argument("--describe", action="store_true",
                         help="describe groups: offsets and lag (default), --members or --state")
    actions.add_argument("--delete", action="store_true",
                         help="delete groups (their committed offsets and metadata)")
    actions.add_argument("--reset-offsets", action="store_true",
                         help="reset the committed offsets of inactive groups")
    actions.add_argument("--delete-offsets", action="store_true",
                         help="delete the committed offsets of one group for --topic")
    parser.add_argument("--group", action="append", default=[], metavar="GROUP",
                        help="the consumer group (repeatable)")
    parser.add_argument("--all-groups", action="store_true", help="apply to all groups")
    parser.add_argument("--topic", action="append", default=[], metavar="TOPIC[:P,P...]",
                        help="for --reset-offsets and --delete-offsets: a topic, optionally "
                             "with partitions (orders:0,1); repeatable")
    parser.add_argument("--all-topics", action="store_true",
                        help="for --reset-offsets: every topic the group has offsets for")
    parser.add_argument("--offsets", action="store_true",
                        help="with --describe: offsets and lag per partition (the default)")
    parser.add_argument("--members", action="store_true",
                        help="with --describe: the members of the group")
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
    scenarios.add_argument("--to-earliest", action="store_true",
                           help="reset to the earliest offset")
    scenarios.add_argument("--to-latest", action="store_true", help="reset to the latest offset")
    scenarios.add_argument("--to-current", action="store_true",
                           help="reset to the committed offset (latest where none)")
    scenarios.add_argument("--to-offset", type=int, metavar="N", help="reset to offset N")
    scenarios.add_argument("--shift-by", type=int, metavar="N",
                           help="move the committed offset by N (may be negative)")
    scenarios.add_argument("--to-datetime", metavar="YYYY-MM-DDTHH:mm:SS.sss",
                           help="reset to the first offset at or after this time")
    scenarios.add_argument("--by-duration", metavar="PnDTnHnMnS",
                           help="reset to the first offset at or after now minus this duration")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="only print the new offsets (the default)")
    mode.add_argument("--execute", action="store_true", help="commit the new offsets")


# -- argument checks and parsing ---------------------------------------------------------------


def _opt(name: str) -> str:
    return "--" + name.replace("_", "-")


def _given(value) -> bool:
    return value is not None and value is not False and value != []


def _check_args(args: argparse.Namespace, action: str) -> None:
    for option, actions in _OPTION_ACTIONS.items():
        if _given(getattr(args, option)) and action not in actions:
            raise ToolError(f"Option {_opt(option)} can only be used with "
                            + " or ".join(_opt(a) for a in actions))
    if args.group and args.all_groups:
        raise ToolError("Option --group cannot be used with --all-groups")
    if action in ("describe", "delete", "reset_offsets") and not (args.group or args.all_groups):
        raise ToolError(f"Option {_opt(action)} takes one of these options: --group, "
                        "--all-groups")
    if action == "describe":
        if sum(map(bool, (args.members, args.offsets, args.state is not None))) > 1:
            raise ToolError("Option --describe takes at most one of these options: --members, "
                            "--offsets, --state")
        if args.state:
            raise ToolError("Option --describe does not take a value for --state")
    if action == "list":
        if args.state:
            _parse_names(args.state, STATE_NAMES, "state")
        if args.type:
            _parse_names(args.type, TYPE_NAMES, "type")
    if action == "delete_offsets":
        if not args.group or not args.topic:
            raise ToolError("Option --delete-offsets takes the following options: --group, "
                            "--topic")
        if len(set(args.group)) > 1:
            raise ToolError("Option --delete-offsets supports one consumer group at a time")
    if action == "reset_offsets":
        if not any(_given(getattr(args, s)) for s in SCENARIOS):
            raise ToolError("Option --reset-offsets requires one of the following scenarios: "
                            + ", ".join(_opt(s) for s in SCENARIOS))
        if not args.topic and not args.all_topics:
            raise ToolError("One of the reset scopes should be defined: --all-topics, --topic.")
        if args.topic and args.all_topics:
            raise ToolError("Option --topic cannot be used with --all-topics")
        for arg in args.topic:
            parse_topic_partitions(arg)
        if args.to_datetime is not None:
            parse_datetime(args.to_datetime)
        if args.by_duration is not None:
            parse_duration_ms(args.by_duration)
    if args.timeout <= 0:
        raise ToolError("--timeout must be positive")


def _parse_names(text: str, names: tuple[str, ...], what: str) -> set[str]:
    """"stable, empty" -> {"Stable", "Empty"} (Kafka's spelling); unknown names are an error."""
    by_lower = {n.lower(): n for n in names}
    out = set()
    for part in text.split(","):
        name = by_lower.get(part.strip().lower())
        if name is None:
            raise ToolError(f"Invalid {what} list '{text}'. Valid {what}s are: "
                            + ", ".join(names))
        out.add(name)
    return out


def parse_topic_partitions(arg: str) -> tuple[str, list[int] | None]:
    """"orders" -> ("orders", None); "orders:0,2" -> ("orders", [0, 2])."""
    if ":" not in arg:
        return arg, None
    parts = arg.split(":")
    if len(parts) != 2 or not parts[0]:
        raise ToolError(f"Invalid topic arg '{arg}', expected topic name and partitions")
    partitions = []
    for p in parts[1].split(","):
        try:
            partitions.append(int(p))
        except ValueError:
            raise ToolError(f"Invalid partition '{p}' specified in topic arg '{arg}'") from None
    return parts[0], partitions


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?"
    r"(Z|[+-]\d{2}(?::?\d{2})?)?")


def parse_datetime(text: str) -> int:
    """Kafka's `--to-datetime` format, 'YYYY-MM-DDTHH:mm:SS.sss' with an optional zone
    (Z, +hh:mm, +hhmm or +hh; UTC when none), as epoch milliseconds. The milliseconds may be
    left out."""
    m = _DATETIME.fullmatch(text.strip())
    if m is None:
        raise ToolError(f"Error parsing timestamp '{text}': expected YYYY-MM-DDTHH:mm:SS.sss, "
                        "optionally followed by Z or an offset such as +01:00")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    millis = int((m.group(7) or "0").ljust(3, "0"))
    zone = m.group(8)
    tz = UTC
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        tz = timezone(sign * offset)
    try:
        moment = datetime(year, month, day, hour, minute, second, millis * 1000, tzinfo=tz)
    except ValueError as e:
        raise ToolError(f"Error parsing timestamp '{text}': {e}") from None
    return (moment - _EPOCH) // timedelta(milliseconds=1)


_DURATION = re.compile(
    r"([-+]?)P(?:([-+]?\d+)D)?"
    r"(?:T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?(?:([-+]?\d+)(?:[.,](\d{0,9}))?S)?)?",
    re.IGNORECASE)


def parse_duration_ms(text: str) -> int:
    """An ISO-8601 duration as Java's Duration.parse reads it (PnDTnHnMnS: days, hours, minutes
    and seconds with an optional fraction), in milliseconds."""
    m = _DURATION.fullmatch(text.strip())
    if m is None or text.strip().upper().endswith("T") or not any(m.groups()[1:5]):
        raise ToolError(f"Text cannot be parsed to a Duration: {text}")
    sign, days, hours, minutes, seconds, fraction = m.groups()
    total = (int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60) * 1000
    secs = int(seconds or 0)
    frac_ms = int((fraction or "0")[:3].ljust(3, "0"))
    total += secs * 1000 + (-frac_ms if seconds and seconds.startswith("-") else frac_ms)
    return -total if sign == "-" else total


# -- helpers -----------------------------------------------------------------------------------


def _kafka_message(exc: BaseException) -> str:
    """Kafka's text for a broker error code, else confluent-kafka's description."""
    arg = exc.args[0] if exc.args else None
    code = arg.code() if arg is not None and hasattr(arg, "code") else None
    if isinstance(code, int) and code in KAFKA_MESSAGES:
        return KAFKA_MESSAGES[code]
    return error_text(exc)


def _state_name(state) -> str:
    name = getattr(state, "name", str(state))
    return {
        "PREPARING_REBALANCING": "PreparingRebalance",
        "COMPLETING_REBALANCING": "CompletingRebalance",
        "STABLE": "Stable",
        "DEAD": "Dead",
        "EMPTY": "Empty",
    }.get(name, "Unknown")


def _type_name(group_type) -> str:
    name = getattr(group_type, "name", str(group_type))
    return {"CLASSIC": "Classic", "CONSUMER": "Consumer"}.get(name, "Unknown")


def _line(widths: list[int], values: list[object]) -> str:
    """Kafka's `%-Ns %-Ns ... %s`: each column padded to its width, the last one not."""
    cells = [str(v).ljust(w) for w, v in zip(widths, values[:-1], strict=False)]
    return " ".join([*cells, str(values[-1])]).rstrip()


def _err(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr)


class _Tool:
    def __init__(self, admin, args: argparse.Namespace, conf: dict) -> None:
        self.admin = admin
        self.args = args
        self.conf = conf
        self.timeout = args.timeout / 1000.0
        self.failed = False

    def result(self, future):
        return future.result(timeout=self.timeout + 10)

    # - groups and metadata -

    def list_groups(self, states=(), types=()):
        kwargs = {"request_timeout": self.timeout}
        if states:
            kwargs["states"] = set(states)
        if types:
            kwargs["types"] = set(types)
        result = self.result(self.admin.list_consumer_groups(**kwargs))
        if result.errors:
            from confluent_kafka import KafkaException

            error = result.errors[0]
            raise error if isinstance(error, BaseException) else KafkaException(error)
        return sorted(result.valid, key=lambda g: g.group_id)

    def group_ids(self) -> list[str]:
        if self.args.all_groups:
            return [g.group_id for g in self.list_groups()]
        return sorted(set(self.args.group))

    def describe_groups(self, group_ids: list[str]) -> dict:
        """group id -> ConsumerGroupDescription; a group the broker reports as not found
        (GROUP_ID_NOT_FOUND, as newer brokers do instead of state Dead) is described as Dead,
        without a coordinator."""
        from confluent_kafka import ConsumerGroupState, KafkaException

        if not group_ids:
            return {}
        futures = self.admin.describe_consumer_groups(group_ids, request_timeout=self.timeout)
        out = {}
        for gid in group_ids:
            try:
                out[gid] = self.result(futures[gid])
            except KafkaException as e:
                if e.args[0].code() != 69:
                    raise
                out[gid] = SimpleNamespace(group_id=gid, state=ConsumerGroupState.DEAD,
                                           members=[], coordinator=None, partition_assignor="")
        return out

    def committed(self, group_id: str) -> dict[tuple[str, int], object]:
        """(topic, partition) -> TopicPartition (with .offset, .leader_epoch) of every
        committed offset of the group."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        futures = self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group_id)], request_timeout=self.timeout)
        result = self.result(futures[group_id])
        return {(tp.topic, tp.partition): tp for tp in result.topic_partitions or []
                if tp.error is None and tp.offset >= 0}

    def partitions_metadata(self) -> dict[str, dict[int, int]]:
        """topic -> {partition: leader id} for every topic (listing all topics never creates
        one, whatever auto.create.topics.enable says)."""
        metadata = self.admin.list_topics(timeout=self.timeout)
        return {name: {p: meta.leader for p, meta in t.partitions.items()}
                for name, t in metadata.topics.items() if t.error is None}

    def log_offsets(self, partitions, spec) -> dict[tuple[str, int], int]:
        """(topic, partition) -> offset from ListOffsets; partitions that failed are absent."""
        from confluent_kafka import KafkaException, TopicPartition

        partitions = sorted(set(partitions))
        if not partitions:
            return {}
        futures = self.admin.list_offsets({TopicPartition(t, p): spec for t, p in partitions},
                                          request_timeout=self.timeout)
        out = {}
        for tp, future in futures.items():
            try:
                out[(tp.topic, tp.partition)] = self.result(future).offset
            except KafkaException:
                continue
        return out

    def end_offsets(self, partitions) -> dict[tuple[str, int], int]:
        from confluent_kafka.admin import OffsetSpec

        return self.log_offsets(partitions, OffsetSpec.latest())

    def start_offsets(self, partitions) -> dict[tuple[str, int], int]:
        from confluent_kafka.admin import OffsetSpec

        return self.log_offsets(partitions, OffsetSpec.earliest())

    # - actions -

    def do_list(self) -> int:
        args = self.args
        if args.state is None and args.type is None:
            for g in self.list_groups():
                print(g.group_id)
            return 0
        from confluent_kafka import ConsumerGroupState, ConsumerGroupType

        states = _parse_names(args.state, STATE_NAMES, "state") if args.state else set()
        types = _parse_names(args.type, TYPE_NAMES, "type") if args.type else set()
        state_enum = {_state_name(s): s for s in ConsumerGroupState}
        type_enum = {_type_name(t): t for t in ConsumerGroupType}
        groups = self.list_groups([state_enum[s] for s in states], [type_enum[t] for t in types])
        width = max([15, *(len(g.group_id) for g in groups)]) + 10
        header, columns = ["GROUP"], [lambda g: g.group_id]
        if args.type is not None:
            header.append("TYPE")
            columns.append(lambda g: _type_name(g.type))
        if args.state is not None:
            header.append("STATE")
            columns.append(lambda g: _state_name(g.state))
        widths = [width] + [20] * (len(header) - 1)
        print(_line(widths, header + [""]))
        for g in groups:
            print(_line(widths, [c(g) for c in columns] + [""]))
        return 0

    def _should_print(self, group_id: str, desc, rows: int) -> bool:
        """Kafka's shouldPrintMemberState: messages for dead, empty and rebalancing groups."""
        state = _state_name(desc.state)
        if state == "Dead":
            _err(f"Consumer group '{group_id}' does not exist.")
            self.failed = True
            return False
        if state == "Empty":
            print(f"Consumer group '{group_id}' has no active members.", file=sys.stderr)
        elif state != "Stable":
            # PreparingRebalance, CompletingRebalance, and the consumer protocol's Assigning and
            # Reconciling (which confluent-kafka reports as Unknown)
            print(f"Warning: Consumer group '{group_id}' is rebalancing.", file=sys.stderr)
        return rows > 0

    def do_describe(self) -> int:
        args = self.args
        descriptions = self.describe_groups(self.group_ids())
        if args.members:
            self._describe_members(descriptions)
        elif args.state is not None:
            self._describe_state(descriptions)
        else:
            self._describe_offsets(descriptions)
        return 1 if self.failed else 0

    def _describe_offsets(self, descriptions: dict) -> None:
        verbose = self.args.verbose
        for gid, desc in descriptions.items():
            committed = self.committed(gid) if _state_name(desc.state) != "Dead" else {}
            rows = []  # (topic, partition, consumer id, host, client id)
            assigned = set()
            members = [m for m in desc.members if m.assignment.topic_partitions]
            members.sort(key=lambda m: -len(m.assignment.topic_partitions))
            for m in members:
                tps = sorted({(tp.topic, tp.partition) for tp in m.assignment.topic_partitions})
                assigned.update(tps)
                rows += [(t, p, m.member_id, m.host, m.client_id) for t, p in tps]
            rows += [(t, p, MISSING, MISSING, MISSING)
                     for t, p in sorted(set(committed) - assigned)]
            if not self._should_print(gid, desc, len(rows)):
                continue
            ends = self.end_offsets((t, p) for t, p, *_ in rows)
            widths = [max(15, len(gid)), max([15, *(len(r[0]) for r in rows)]), 10]
            widths += [15] * (4 if verbose else 3)
            widths += [max([15, *(len(r[2]) for r in rows)]),
                       max([15, *(len(r[3]) for r in rows)])]
            header = ["GROUP", "TOPIC", "PARTITION"]
            header += ["LEADER-EPOCH"] if verbose else []
            header += ["CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
                       "CLIENT-ID"]
            print()
            print(_line(widths, header))
            for topic, partition, consumer_id, host, client_id in rows:
                c = committed.get((topic, partition))
                offset = c.offset if c is not None else None
                end = ends.get((topic, partition))
                lag = end - offset if offset is not None and end is not None else None
                values = [gid, topic, partition]
                if verbose:
                    epoch = c.leader_epoch if c is not None else None
                    values.append(MISSING if epoch is None or epoch < 0 else epoch)
                values += [MISSING if v is None else v for v in (offset, end, lag)]
                values += [consumer_id, host, client_id]
                print(_line(widths, values))

    def _describe_members(self, descriptions: dict) -> None:
        verbose = self.args.verbose
        for gid, desc in descriptions.items():
            members = list(desc.members)
            if not self._should_print(gid, desc, len(members)):
                continue
            with_instance = any(m.group_instance_id for m in members)
            widths = [max([15, len(gid)]), max([15, *(len(m.member_id) for m in members)])]
            header = ["GROUP", "CONSUMER-ID"]
            if with_instance:
                widths.append(max([17, *(len(m.group_instance_id or "") for m in members)]))
                header.append("GROUP-INSTANCE-ID")
            widths += [max([15, *(len(m.host) for m in members)]),
                       max([15, *(len(m.client_id) for m in members)]), 15]
            header += ["HOST", "CLIENT-ID", "#PARTITIONS"]
            if verbose:
                header.append("ASSIGNMENT")
            print()
            print(_line(widths, header + ([] if verbose else [""])))
            for m in members:
                tps = m.assignment.topic_partitions
                values = [gid, m.member_id]
                if with_instance:
                    values.append(m.group_instance_id or "")
                values += [m.host, m.client_id, len(tps)]
                values += [_assignment_text(tps)] if verbose else [""]
                print(_line(widths, values))

    def _describe_state(self, descriptions: dict) -> None:
        verbose = self.args.verbose
        for gid, desc in descriptions.items():
            if not self._should_print(gid, desc, 1):
                continue
            node = desc.coordinator
            coordinator = f"{node.host}:{node.port}  ({node.id})"
            widths = [max(15, len(gid)), max(25, len(coordinator)), 20, 20]
            header = ["GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE"]
            values = [gid, coordinator, desc.partition_assignor or MISSING,
                      _state_name(desc.state)]
            if verbose:  # classic groups have no epochs
                widths += [15, 25]
                header += ["GROUP-EPOCH", "TARGET-ASSIGNMENT-EPOCH"]
                values += [MISSING, MISSING]
            print()
            print(_line(widths, header + ["#MEMBERS"]))
            print(_line(widths, values + [len(desc.members)]))

    def do_delete(self) -> int:
        from confluent_kafka import KafkaException

        group_ids = self.group_ids()
        if not group_ids:
            return 0
        futures = self.admin.delete_consumer_groups(group_ids, request_timeout=self.timeout)
        succeeded, failed = [], []
        for gid in group_ids:
            try:
                self.result(futures[gid])
                succeeded.append(gid)
            except KafkaException as e:
                failed.append((gid, _kafka_message(e)))
        quoted = ", ".join(f"'{g}'" for g in succeeded)
        if not failed:
            print(f"Deletion of requested consumer groups ({quoted}) was successful.")
            return 0
        _err("Deletion of some consumer groups failed:")
        for gid, reason in failed:
            print(f"* Group '{gid}' could not be deleted due to: {reason}", file=sys.stderr)
        if succeeded:
            print(f"These consumer groups were deleted successfully: {quoted}")
        return 1

    # - reset-offsets -

    def do_reset_offsets(self) -> int:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        args = self.args
        if not args.dry_run and not args.execute:
            print("WARN: No action will be performed as the --execute option is missing. "
                  "Add --dry-run to say so explicitly, or --execute to reset the offsets.",
                  file=sys.stderr)
        descriptions = self.describe_groups(self.group_ids())
        plans: dict[str, dict[tuple[str, int], int]] = {}
        metadata = None
        for gid, desc in descriptions.items():
            state = _state_name(desc.state)
            if state not in ("Empty", "Dead"):
                _err(f"Assignments can only be reset if the group '{gid}' is inactive, but the "
                     f"current state is {state}.")
                self.failed = True
                continue
            if metadata is None:
                metadata = self.partitions_metadata()
            committed = {tp: c.offset for tp, c in self.committed(gid).items()}
            partitions = self._partitions_to_reset(committed, metadata)
            plan = self._prepare(partitions, committed)
            if args.execute and plan:
                request = ConsumerGroupTopicPartitions(
                    gid, [TopicPartition(t, p, o) for (t, p), o in sorted(plan.items())])
                futures = self.admin.alter_consumer_group_offsets([request],
                                                                  request_timeout=self.timeout)
                result = self.result(futures[gid])
                errors = [tp for tp in result.topic_partitions or [] if tp.error is not None]
                if errors:
                    tp = errors[0]
                    raise ToolError(f"could not commit the offset of {tp.topic}-{tp.partition}: "
                                    f"{tp.error.str()}")
            plans[gid] = plan
        if plans:
            rows = [(gid, t, p, o) for gid, plan in plans.items()
                    for (t, p), o in sorted(plan.items())]
            widths = [max([15, *(len(g) for g in plans)]),
                      max([15, *(len(r[1]) for r in rows)]), 10]
            print()
            print(_line(widths, ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]))
            for row in rows:
                print(_line(widths, list(row)))
        return 1 if self.failed else 0

    def _partitions_to_reset(self, committed: dict, metadata: dict) -> list[tuple[str, int]]:
        if self.args.all_topics:
            wanted = sorted(committed)
        else:
            wanted = []
            for arg in self.args.topic:
                topic, partitions = parse_topic_partitions(arg)
                if partitions is None:
                    if topic not in metadata:
                        raise ToolError(f"Topic '{topic}' does not exist")
                    partitions = sorted(metadata[topic])
                wanted += [(topic, p) for p in partitions]
            wanted = sorted(set(wanted))
        missing = [f"{t}-{p}" for t, p in wanted if p not in metadata.get(t, {})]
        if missing:
            raise ToolError(f'The partitions "{",".join(missing)}" do not exist')
        leaderless = [f"{t}-{p}" for t, p in wanted if metadata[t][p] < 0]
        if leaderless:
            raise ToolError(f'The partitions "{",".join(leaderless)}" have no leader')
        return wanted

    def _need(self, offsets: dict, partitions, what: str) -> dict:
        for t, p in partitions:
            if (t, p) not in offsets or offsets[(t, p)] < 0:
                raise ToolError(f"Error getting {what} offset of topic partition: {t}-{p}")
        return offsets

    def _clamp(self, requested: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Kafka's checkOffsetsRange: offsets past the end become the end, offsets before the
        start become the start."""
        starts = self.start_offsets(requested)
        ends = self._need(self.end_offsets(requested), requested, "ending")
        out = {}
        for (t, p), offset in requested.items():
            end, start = ends[(t, p)], starts.get((t, p))
            if offset > end:
                print(f"WARN: New offset ({offset}) is higher than latest offset for topic "
                      f"partition {t}-{p}. Value will be set to {end}.", file=sys.stderr)
                offset = end
            elif start is not None and start >= 0 and offset < start:
                print(f"WARN: New offset ({offset}) is lower than earliest offset for topic "
                      f"partition {t}-{p}. Value will be set to {start}.", file=sys.stderr)
                offset = start
            out[(t, p)] = offset
        return out

    def _by_timestamp(self, partitions, timestamp: int) -> dict[tuple[str, int], int]:
        from confluent_kafka.admin import OffsetSpec

        found = self.log_offsets(partitions, OffsetSpec.for_timestamp(timestamp))
        out, fallback = {}, []
        for t, p in partitions:
            offset = found.get((t, p))
            if offset is not None and offset >= 0:
                out[(t, p)] = offset
            else:
                print(f"WARN: Partition {p} from topic {t} is empty. Falling back to latest "
                      "known offset.", file=sys.stderr)
                fallback.append((t, p))
        out.update(self._need(self.end_offsets(fallback), fallback, "ending"))
        return {tp: out[tp] for tp in partitions}

    def _prepare(self, partitions: list[tuple[str, int]], committed: dict
                 ) -> dict[tuple[str, int], int]:
        args = self.args
        if args.to_earliest:
            starts = self._need(self.start_offsets(partitions), partitions, "starting")
            return {tp: starts[tp] for tp in partitions}
        if args.to_latest:
            ends = self._need(self.end_offsets(partitions), partitions, "ending")
            return {tp: ends[tp] for tp in partitions}
        if args.to_current:
            missing = [tp for tp in partitions if tp not in committed]
            ends = self._need(self.end_offsets(missing), missing, "ending")
            return {tp: committed[tp] if tp in committed else ends[tp] for tp in partitions}
        if args.to_offset is not None:
            return self._clamp({tp: args.to_offset for tp in partitions})
        if args.shift_by is not None:
            for t, p in partitions:
                if (t, p) not in committed:
                    raise ToolError(f"Cannot shift offset for partition {t}-{p} since there is "
                                    "no current committed offset")
            return self._clamp({tp: committed[tp] + args.shift_by for tp in partitions})
        if args.to_datetime is not None:
            return self._by_timestamp(partitions, parse_datetime(args.to_datetime))
        duration = parse_duration_ms(args.by_duration)
        return self._by_timestamp(partitions, int(time.time() * 1000) - duration)

    # - delete-offsets -

    def do_delete_offsets(self) -> int:
        from confluent_kafka import KafkaException

        gid = self.args.group[0]
        metadata = self.partitions_metadata()
        results: dict[tuple[str, int], str | None] = {}  # None: deleted
        wanted: list[tuple[str, int]] = []
        for arg in self.args.topic:
            topic, partitions = parse_topic_partitions(arg)
            if partitions is None:
                if topic not in metadata:
                    results[(topic, -1)] = KAFKA_MESSAGES[3]
                    continue
                partitions = sorted(metadata[topic])
            wanted += [(topic, p) for p in partitions]
        wanted = sorted(set(wanted))
        top_code = 0
        if wanted:
            try:
                top_code, codes = self._send_offset_delete(gid, wanted)
            except KafkaException as e:
                raise ToolError(_kafka_message(e)) from e
            for tp in wanted:
                code = codes.get(tp, top_code)
                results[tp] = None if code == 0 else _code_message(code)
        if top_code == 0 and all(r is None for r in results.values()):
            print(f"Request succeeded for deleting offsets from group {gid}.")
            status = 0
        else:
            status = 1
            if top_code in (24, 30, 68, 69):
                _err(_code_message(top_code))
            elif top_code in (0, 3, 29, 86):
                _err("Encountered some partition-level error, see the follow-up details.")
            else:
                _err(f"Encountered some unknown error: {_code_message(top_code)}")
        widths = [max([15, *(len(t) for t, _ in results)]), 10, 15]
        print()
        print(_line(widths, ["TOPIC", "PARTITION", "STATUS"]))
        for (t, p), error in sorted(results.items()):
            print(_line(widths, [t, p if p >= 0 else MISSING,
                                 "Successful" if error is None else f"Error: {error}"]))
        return status

    def _send_offset_delete(self, group_id: str, partitions: list[tuple[str, int]]
                            ) -> tuple[int, dict[tuple[str, int], int]]:
        """OffsetDelete (API 47) to the group's coordinator, which confluent-kafka's
        AdminClient does not offer: a PLAINTEXT request on a socket of its own. Retries while
        the coordinator moves or loads."""
        protocol = str(self.conf.get("security.protocol", "plaintext")).lower()
        if protocol != "plaintext":
            raise ToolError("--delete-offsets needs a PLAINTEXT listener "
                            f"(security.protocol={protocol} is not supported for it)")
        deadline = time.monotonic() + self.timeout
        while True:
            desc = self.describe_groups([group_id])[group_id]
            node = desc.coordinator
            if node is None and _state_name(desc.state) == "Dead":
                return 69, {}  # GROUP_ID_NOT_FOUND
            if node is None or node.id < 0:
                top, codes = 15, {}
            else:
                top, codes = offset_delete(node.host, node.port, group_id, partitions,
                                           max(1.0, deadline - time.monotonic()))
            if top not in _COORDINATOR_RETRIABLE or time.monotonic() >= deadline:
                return top, codes
            time.sleep(0.2)


def _code_message(code: int) -> str:
    if code in KAFKA_MESSAGES:
        return KAFKA_MESSAGES[code]
    from confluent_kafka import KafkaError

    return KafkaError(code).str()


def _assignment_text(tps) -> str:
    """Kafka 3.x's ASSIGNMENT column: "orders(0,1), audit(2)", "-" when empty."""
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    if not by_topic:
        return MISSING
    return ", ".join(sorted(f"{t}({','.join(map(str, sorted(ps)))})"
                            for t, ps in by_topic.items()))


# -- OffsetDelete on the wire (v0; request header v1, response header v0) ----------------------


def _string(s: str) -> bytes:
    data = s.encode()
    return struct.pack(">h", len(data)) + data


def encode_offset_delete(correlation_id: int, group_id: str,
                         partitions: list[tuple[str, int]], client_id: str = "strom-cli") -> bytes:
    by_topic: dict[str, list[int]] = {}
    for t, p in partitions:
        by_topic.setdefault(t, []).append(p)
    body = _string(group_id) + struct.pack(">i", len(by_topic))
    for topic, ps in by_topic.items():
        body += _string(topic) + struct.pack(">i", len(ps))
        body += b"".join(struct.pack(">i", p) for p in ps)
    payload = struct.pack(">hhi", 47, 0, correlation_id) + _string(client_id) + body
    return struct.pack(">i", len(payload)) + payload


def decode_offset_delete(data: bytes) -> tuple[int, int, dict[tuple[str, int], int]]:
    """-> (correlation id, top-level error code, {(topic, partition): error code})."""
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string() -> str:
        nonlocal pos
        n = take(">h")
        s = data[pos:pos + n].decode()
        pos += n
        return s

    correlation_id, error_code, _throttle = take(">ihi")
    codes = {}
    for _ in range(take(">i")):
        topic = string()
        for _ in range(take(">i")):
            partition, code = take(">ih")
            codes[(topic, partition)] = code
    return correlation_id, error_code, codes


def offset_delete(host: str, port: int, group_id: str, partitions: list[tuple[str, int]],
                  timeout: float) -> tuple[int, dict[tuple[str, int], int]]:
    request = encode_offset_delete(1, group_id, partitions)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
            correlation_id, top, codes = decode_offset_delete(_recv_exactly(sock, size))
    except (OSError, struct.error, UnicodeDecodeError) as e:
        raise ToolError(f"OffsetDelete request to {host}:{port} failed: {e}") from None
    if correlation_id != 1:
        raise ToolError(f"OffsetDelete response from {host}:{port} has the wrong correlation id")
    return top, codes


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise OSError("connection closed by the broker")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# -- entry point -------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from concurrent.futures import CancelledError

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    action = next(a for a in ACTIONS if getattr(args, a))
    try:
        _check_args(args, action)
    except ToolError as e:
        print(str(e), file=sys.stderr)
        return 1
    try:
        conf = {**BASE_CLIENT_CONFIG, **QUIET_CONFIG, **load_properties(args.command_config),
                "bootstrap.servers": args.bootstrap_server}
        tool = _Tool(AdminClient(conf), args, conf)
        return getattr(tool, f"do_{action}")()
    except (ToolError, KafkaException, TimeoutError, CancelledError) as e:
        reason = _kafka_message(e) if isinstance(e, KafkaException) else error_text(e)
        _err(f"Executing consumer group command failed due to {reason}")
        return 1
