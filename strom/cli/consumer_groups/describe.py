"""--list and --describe of `strom consumer-groups`: the group list (with --state and --type
filters) and, per group, its offsets and lag, its members or its state, in Kafka's layout."""

from __future__ import annotations

import sys

from strom.cli.consumer_groups.admin import MISSING, GroupAdmin, err, line, state_name, type_name
from strom.cli.consumer_groups.options import STATE_NAMES, TYPE_NAMES, parse_names


def do_list(tool: GroupAdmin) -> int:
    args = tool.args
    if args.state is None and args.type is None:
        for g in tool.list_groups():
            print(g.group_id)
        return 0
    from confluent_kafka import ConsumerGroupState, ConsumerGroupType

    states = parse_names(args.state, STATE_NAMES, "state") if args.state else set()
    types = parse_names(args.type, TYPE_NAMES, "type") if args.type else set()
    state_enum = {state_name(s): s for s in ConsumerGroupState}
    type_enum = {type_name(t): t for t in ConsumerGroupType}
    groups = tool.list_groups([state_enum[s] for s in states], [type_enum[t] for t in types])
    width = max([15, *(len(g.group_id) for g in groups)]) + 10
    header, columns = ["GROUP"], [lambda g: g.group_id]
    if args.type is not None:
        header.append("TYPE")
        columns.append(lambda g: type_name(g.type))
    if args.state is not None:
        header.append("STATE")
        columns.append(lambda g: state_name(g.state))
    widths = [width] + [20] * (len(header) - 1)
    print(line(widths, header + [""]))
    for g in groups:
        print(line(widths, [c(g) for c in columns] + [""]))
    return 0


def _should_print(tool: GroupAdmin, group_id: str, desc, rows: int) -> bool:
    """Kafka's shouldPrintMemberState: messages for dead, empty and rebalancing groups."""
    state = state_name(desc.state)
    if state == "Dead":
        err(f"Consumer group '{group_id}' does not exist.")
        tool.failed = True
        return False
    if state == "Empty":
        print(f"Consumer group '{group_id}' has no active members.", file=sys.stderr)
    elif state != "Stable":
        # PreparingRebalance, CompletingRebalance, and the consumer protocol's Assigning and
        # Reconciling (which confluent-kafka reports as Unknown)
        print(f"Warning: Consumer group '{group_id}' is rebalancing.", file=sys.stderr)
    return rows > 0


def do_describe(tool: GroupAdmin) -> int:
    args = tool.args
    descriptions = tool.describe_groups(tool.group_ids())
    if args.members:
        _describe_members(tool, descriptions)
    elif args.state is not None:
        _describe_state(tool, descriptions)
    else:
        _describe_offsets(tool, descriptions)
    return 1 if tool.failed else 0


def _describe_offsets(tool: GroupAdmin, descriptions: dict) -> None:
    verbose = tool.args.verbose
    for gid, desc in descriptions.items():
        committed = tool.committed(gid) if state_name(desc.state) != "Dead" else {}
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
        if not _should_print(tool, gid, desc, len(rows)):
            continue
        ends = tool.end_offsets((t, p) for t, p, *_ in rows)
        widths = [max(15, len(gid)), max([15, *(len(r[0]) for r in rows)]), 10]
        widths += [15] * (4 if verbose else 3)
        widths += [max([15, *(len(r[2]) for r in rows)]),
                   max([15, *(len(r[3]) for r in rows)])]
        header = ["GROUP", "TOPIC", "PARTITION"]
        header += ["LEADER-EPOCH"] if verbose else []
        header += ["CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST",
                   "CLIENT-ID"]
        print()
        print(line(widths, header))
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
            print(line(widths, values))


def _describe_members(tool: GroupAdmin, descriptions: dict) -> None:
    verbose = tool.args.verbose
    for gid, desc in descriptions.items():
        members = list(desc.members)
        if not _should_print(tool, gid, desc, len(members)):
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
        print(line(widths, header + ([] if verbose else [""])))
        for m in members:
            tps = m.assignment.topic_partitions
            values = [gid, m.member_id]
            if with_instance:
                values.append(m.group_instance_id or "")
            values += [m.host, m.client_id, len(tps)]
            values += [_assignment_text(tps)] if verbose else [""]
            print(line(widths, values))


def _describe_state(tool: GroupAdmin, descriptions: dict) -> None:
    verbose = tool.args.verbose
    for gid, desc in descriptions.items():
        if not _should_print(tool, gid, desc, 1):
            continue
        node = desc.coordinator
        coordinator = f"{node.host}:{node.port}  ({node.id})"
        widths = [max(15, len(gid)), max(25, len(coordinator)), 20, 20]
        header = ["GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE"]
        values = [gid, coordinator, desc.partition_assignor or MISSING,
                  state_name(desc.state)]
        if verbose:  # classic groups have no epochs
            widths += [15, 25]
            header += ["GROUP-EPOCH", "TARGET-ASSIGNMENT-EPOCH"]
            values += [MISSING, MISSING]
        print()
        print(line(widths, header + ["#MEMBERS"]))
        print(line(widths, values + [len(desc.members)]))


def _assignment_text(tps) -> str:
    """Kafka 3.x's ASSIGNMENT column: "orders(0,1), audit(2)", "-" when empty."""
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    if not by_topic:
        return MISSING
    return ", ".join(sorted(f"{t}({','.join(map(str, sorted(ps)))})"
                            for t, ps in by_topic.items()))


