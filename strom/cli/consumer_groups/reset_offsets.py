"""--reset-offsets of `strom consumer-groups`: the new offset of each partition in scope
per scenario (Kafka's ResetOffsets: --to-offset and --shift-by clamped to the log's range, a
time without records falling back to the end), printed, and committed with --execute while
the group has no members."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable

from strom.cli._common import ToolError
from strom.cli.consumer_groups.admin import GroupAdmin, err, line, state_name
from strom.cli.consumer_groups.options import (
    parse_datetime,
    parse_duration_ms,
    parse_topic_partitions,
)
from strom.cli.progress import Progress


def do_reset_offsets(tool: GroupAdmin) -> int:
    args = tool.args
    if not args.dry_run and not args.execute:
        print("WARN: No action will be performed as the --execute option is missing. "
              "Add --dry-run to say so explicitly, or --execute to reset the offsets.",
              file=sys.stderr)
    descriptions = tool.describe_groups(tool.group_ids())
    plans: dict[str, dict[tuple[str, int], int]] = {}
    metadata = functools.cache(tool.partitions_metadata)  # read once, when first needed
    # each group costs a few round trips: with --all-groups on a large cluster the bar (or
    # a line every 5 s on stderr) shows how far the reset is
    with Progress("Resetting offsets", total=len(descriptions), unit="groups",
                  plain_every=5.0) as progress:
        for gid, desc in descriptions.items():
            _reset_group(tool, gid, desc, plans, metadata)
            progress.advance()
    if plans:
        rows = [(gid, t, p, o) for gid, plan in plans.items()
                for (t, p), o in sorted(plan.items())]
        widths = [max([15, *(len(g) for g in plans)]),
                  max([15, *(len(r[1]) for r in rows)]), 10]
        print()
        print(line(widths, ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]))
        for row in rows:
            print(line(widths, list(row)))
    return 1 if tool.failed else 0


def _reset_group(tool: GroupAdmin, gid: str, desc, plans: dict,
                 metadata: Callable[[], dict]) -> None:
    """Plan (and with --execute commit) the new offsets of one group into `plans`."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    args = tool.args
    state = state_name(desc.state)
    if state not in ("Empty", "Dead"):
        err(f"Assignments can only be reset if the group '{gid}' is inactive, but the "
            f"current state is {state}.")
        tool.failed = True
        return
    committed = {tp: c.offset for tp, c in tool.committed(gid).items()}
    partitions = _partitions_to_reset(tool, committed, metadata())
    plan = _prepare(tool, partitions, committed)
    if args.execute and plan:
        request = ConsumerGroupTopicPartitions(
            gid, [TopicPartition(t, p, o) for (t, p), o in sorted(plan.items())])
        futures = tool.admin.alter_consumer_group_offsets([request],
                                                          request_timeout=tool.timeout)
        result = tool.result(futures[gid])
        errors = [tp for tp in result.topic_partitions or [] if tp.error is not None]
        if errors:
            tp = errors[0]
            raise ToolError(f"could not commit the offset of {tp.topic}-{tp.partition}: "
                            f"{tp.error.str()}")
    plans[gid] = plan


def _partitions_to_reset(tool: GroupAdmin, committed: dict, metadata: dict
                         ) -> list[tuple[str, int]]:
    if tool.args.all_topics:
        wanted = sorted(committed)
    else:
        wanted = []
        for arg in tool.args.topic:
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


def _need(tool: GroupAdmin, offsets: dict, partitions, what: str) -> dict:
    for t, p in partitions:
        if (t, p) not in offsets or offsets[(t, p)] < 0:
            raise ToolError(f"Error getting {what} offset of topic partition: {t}-{p}")
    return offsets


def _clamp(tool: GroupAdmin, requested: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """Kafka's checkOffsetsRange: offsets past the end become the end, offsets before the
    start become the start."""
    starts = tool.start_offsets(requested)
    ends = _need(tool, tool.end_offsets(requested), requested, "ending")
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


def _by_timestamp(tool: GroupAdmin, partitions, timestamp: int) -> dict[tuple[str, int], int]:
    from confluent_kafka.admin import OffsetSpec

    found = tool.log_offsets(partitions, OffsetSpec.for_timestamp(timestamp))
    out, fallback = {}, []
    for t, p in partitions:
        offset = found.get((t, p))
        if offset is not None and offset >= 0:
            out[(t, p)] = offset
        else:
            print(f"WARN: Partition {p} from topic {t} is empty. Falling back to latest "
                  "known offset.", file=sys.stderr)
            fallback.append((t, p))
    out.update(_need(tool, tool.end_offsets(fallback), fallback, "ending"))
    return {tp: out[tp] for tp in partitions}


def _prepare(tool: GroupAdmin, partitions: list[tuple[str, int]], committed: dict
             ) -> dict[tuple[str, int], int]:
    args = tool.args
    if args.to_earliest:
        starts = _need(tool, tool.start_offsets(partitions), partitions, "starting")
        return {tp: starts[tp] for tp in partitions}
    if args.to_latest:
        ends = _need(tool, tool.end_offsets(partitions), partitions, "ending")
        return {tp: ends[tp] for tp in partitions}
    if args.to_current:
        missing = [tp for tp in partitions if tp not in committed]
        ends = _need(tool, tool.end_offsets(missing), missing, "ending")
        return {tp: committed[tp] if tp in committed else ends[tp] for tp in partitions}
    if args.to_offset is not None:
        return _clamp(tool, {tp: args.to_offset for tp in partitions})
    if args.shift_by is not None:
        for t, p in partitions:
            if (t, p) not in committed:
                raise ToolError(f"Cannot shift offset for partition {t}-{p} since there is "
                                "no current committed offset")
        return _clamp(tool, {tp: committed[tp] + args.shift_by for tp in partitions})
    if args.to_datetime is not None:
        return _by_timestamp(tool, partitions, parse_datetime(args.to_datetime))
    duration = parse_duration_ms(args.by_duration)
    return _by_timestamp(tool, partitions, int(time.time() * 1000) - duration)
