"""--delete and --delete-offsets of `strom consumer-groups`. Groups are deleted through
confluent-kafka's AdminClient; offsets with OffsetDelete, which that client does not offer,
sent to the group's coordinator through strom.protocol's client."""

from __future__ import annotations

import sys
import time

from strom.cli._common import ToolError, broker_request
from strom.cli.consumer_groups.admin import (
    KAFKA_MESSAGES,
    MISSING,
    GroupAdmin,
    code_message,
    err,
    kafka_message,
    line,
    state_name,
)
from strom.cli.consumer_groups.options import parse_topic_partitions

# NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS: asked again
_COORDINATOR_RETRIABLE = (14, 15, 16)


def do_delete(tool: GroupAdmin) -> int:
    from confluent_kafka import KafkaException

    group_ids = tool.group_ids()
    if not group_ids:
        return 0
    futures = tool.admin.delete_consumer_groups(group_ids, request_timeout=tool.timeout)
    succeeded, failed = [], []
    for gid in group_ids:
        try:
            tool.result(futures[gid])
            succeeded.append(gid)
        except KafkaException as e:
            failed.append((gid, kafka_message(e)))
    quoted = ", ".join(f"'{g}'" for g in succeeded)
    if not failed:
        print(f"Deletion of requested consumer groups ({quoted}) was successful.")
        return 0
    err("Deletion of some consumer groups failed:")
    for gid, reason in failed:
        print(f"* Group '{gid}' could not be deleted due to: {reason}", file=sys.stderr)
    if succeeded:
        print(f"These consumer groups were deleted successfully: {quoted}")
    return 1


def do_delete_offsets(tool: GroupAdmin) -> int:
    from confluent_kafka import KafkaException

    gid = tool.args.group[0]
    metadata = tool.partitions_metadata()
    results: dict[tuple[str, int], str | None] = {}  # None: deleted
    wanted: list[tuple[str, int]] = []
    for arg in tool.args.topic:
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
            top_code, codes = _send_offset_delete(tool, gid, wanted)
        except KafkaException as e:
            raise ToolError(kafka_message(e)) from e
        for tp in wanted:
            code = codes.get(tp, top_code)
            results[tp] = None if code == 0 else code_message(code)
    if top_code == 0 and all(r is None for r in results.values()):
        print(f"Request succeeded for deleting offsets from group {gid}.")
        status = 0
    else:
        status = 1
        if top_code in (24, 30, 68, 69):
            err(code_message(top_code))
        elif top_code in (0, 3, 29, 86):
            err("Encountered some partition-level error, see the follow-up details.")
        else:
            err(f"Encountered some unknown error: {code_message(top_code)}")
    widths = [max([15, *(len(t) for t, _ in results)]), 10, 15]
    print()
    print(line(widths, ["TOPIC", "PARTITION", "STATUS"]))
    for (t, p), error in sorted(results.items()):
        print(line(widths, [t, p if p >= 0 else MISSING,
                            "Successful" if error is None else f"Error: {error}"]))
    return status


def _send_offset_delete(tool: GroupAdmin, group_id: str, partitions: list[tuple[str, int]]
                        ) -> tuple[int, dict[tuple[str, int], int]]:
    """OffsetDelete (API 47) to the group's coordinator, which confluent-kafka's
    AdminClient does not offer: a PLAINTEXT request on a socket of its own. Retries while
    the coordinator moves or loads."""
    protocol = str(tool.conf.get("security.protocol", "plaintext")).lower()
    if protocol != "plaintext":
        raise ToolError("--delete-offsets needs a PLAINTEXT listener "
                        f"(security.protocol={protocol} is not supported for it)")
    deadline = time.monotonic() + tool.timeout
    while True:
        desc = tool.describe_groups([group_id])[group_id]
        node = desc.coordinator
        if node is None and state_name(desc.state) == "Dead":
            return 69, {}  # GROUP_ID_NOT_FOUND
        if node is None or node.id < 0:
            top, codes = 15, {}
        else:
            top, codes = offset_delete(node.host, node.port, group_id, partitions,
                                       max(1.0, deadline - time.monotonic()))
        if top not in _COORDINATOR_RETRIABLE or time.monotonic() >= deadline:
            return top, codes
        time.sleep(0.2)


def offset_delete(host: str, port: int, group_id: str, partitions: list[tuple[str, int]],
                  timeout: float) -> tuple[int, dict[tuple[str, int], int]]:
    """OffsetDelete v0 to one broker: (top-level error code, {(topic, partition): error
    code})."""
    from strom.protocol.client import BrokerConnectionError
    from strom.protocol.messages import make, request_module, request_schema

    mod = request_module(47, 0)
    by_topic: dict[str, list[int]] = {}
    for t, p in partitions:
        by_topic.setdefault(t, []).append(p)
    request = make(request_schema(47, 0), group_id=group_id, topics=tuple(
        make(mod.OffsetDeleteRequestTopic, name=t, partitions=tuple(
            make(mod.OffsetDeleteRequestPartition, partition_index=p) for p in ps))
        for t, ps in by_topic.items()))
    try:
        response = broker_request(host, port, request, "strom-cli", timeout)
    except BrokerConnectionError as e:
        raise ToolError(f"OffsetDelete request to {host}:{port} failed: {e}") from None
    codes = {(t.name, p.partition_index): int(p.error_code)
             for t in response.topics for p in t.partitions}
    return int(response.error_code), codes
