"""The command line of `strom consumer-groups`: which options go with which action, and the
parsers of its values (topic:partitions, Kafka's --to-datetime and --by-duration formats).
Every problem is a ToolError with Kafka's text."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta, timezone

from strom.cli._common import ToolError, option_name

ACTIONS = ("list", "describe", "delete", "reset_offsets", "delete_offsets")
# The --reset-offsets scenarios, exactly one of which it needs: dest -> add_argument's keywords
# (the options of one mutually exclusive group, in this order).
SCENARIO_OPTIONS: dict[str, dict[str, object]] = {
    "to_earliest": {"action": "store_true", "help": "reset to the earliest offset"},
    "to_latest": {"action": "store_true", "help": "reset to the latest offset"},
    "to_current": {"action": "store_true",
                   "help": "reset to the committed offset (latest where none)"},
    "to_offset": {"type": int, "metavar": "N", "help": "reset to offset N"},
    "shift_by": {"type": int, "metavar": "N",
                 "help": "move the committed offset by N (may be negative)"},
    "to_datetime": {"metavar": "YYYY-MM-DDTHH:mm:SS.sss",
                    "help": "reset to the first offset at or after this time"},
    "by_duration": {"metavar": "PnDTnHnMnS",
                    "help": "reset to the first offset at or after now minus this duration"},
}
SCENARIOS = tuple(SCENARIO_OPTIONS)

# Kafka's names of the classic group states and group types (as kafka-consumer-groups prints
# and accepts them; matching is case-insensitive).
STATE_NAMES = ("PreparingRebalance", "CompletingRebalance", "Stable", "Dead", "Empty")
TYPE_NAMES = ("Classic", "Consumer")

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


# -- argument checks and parsing ---------------------------------------------------------------


def _given(value) -> bool:
    return value is not None and value is not False and value != []


def check_args(args: argparse.Namespace, action: str) -> None:
    for option, actions in _OPTION_ACTIONS.items():
        if _given(getattr(args, option)) and action not in actions:
            raise ToolError(f"Option {option_name(option)} can only be used with "
                            + " or ".join(option_name(a) for a in actions))
    if args.group and args.all_groups:
        raise ToolError("Option --group cannot be used with --all-groups")
    if action in ("describe", "delete", "reset_offsets") and not (args.group or args.all_groups):
        raise ToolError(f"Option {option_name(action)} takes one of these options: --group, "
                        "--all-groups")
    if action == "describe":
        if sum(map(bool, (args.members, args.offsets, args.state is not None))) > 1:
            raise ToolError("Option --describe takes at most one of these options: --members, "
                            "--offsets, --state")
        if args.state:
            raise ToolError("Option --describe does not take a value for --state")
    if action == "list":
        if args.state:
            parse_names(args.state, STATE_NAMES, "state")
        if args.type:
            parse_names(args.type, TYPE_NAMES, "type")
    if action == "delete_offsets":
        if not args.group or not args.topic:
            raise ToolError("Option --delete-offsets takes the following options: --group, "
                            "--topic")
        if len(set(args.group)) > 1:
            raise ToolError("Option --delete-offsets supports one consumer group at a time")
    if action == "reset_offsets":
        if not any(_given(getattr(args, s)) for s in SCENARIOS):
            raise ToolError("Option --reset-offsets requires one of the following scenarios: "
                            + ", ".join(option_name(s) for s in SCENARIOS))
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


def parse_names(text: str, names: tuple[str, ...], what: str) -> set[str]:
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

