"""Create, list, describe, alter and delete topics (like Kafka's kafka-topics.sh).

Exactly one action is required. --topic also accepts a regular expression (matched against
the whole name; a comma separates alternatives) except with --create.

examples:
  strom topics --create --topic orders --partitions 3 --config retention.ms=86400000
  strom topics --create --topic pinned --replica-assignment 1:2,2:3,3:1
  strom topics --list --exclude-internal
  strom topics --describe --topic 'orders.*'
  strom topics --describe --under-replicated-partitions
  strom topics --alter --topic orders --partitions 6
  strom topics --alter --topic orders --config retention.ms=3600000
  strom topics --delete --topic orders --if-exists
"""

from __future__ import annotations

import argparse
import re
import sys

from strom.cli import _common as common
from strom.cli._common import ToolError

TIMEOUT = 30.0  # seconds, for every admin request
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
ACTIONS = ("create", "list", "describe", "alter", "delete")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_bootstrap_argument(parser)
    common.add_command_config_argument(parser)
    common.add_actions(parser, {
        "--create": "create a topic",
        "--list": "list topic names",
        "--describe": "describe topics (all topics when --topic is not given)",
        "--alter": "add partitions (--partitions) and/or set configs (--config)",
        "--delete": "delete topics",
    })
    parser.add_argument("--topic", help="topic name, or a regular expression except with --create")
    parser.add_argument("--partitions", type=int, metavar="N",
                        help="partition count for --create (default: the broker's num.partitions)"
                             " or the new, larger count for --alter")
    parser.add_argument("--replication-factor", type=int, metavar="N",
                        help="replication factor for --create "
                             "(default: the broker's default.replication.factor)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="topic config for --create or --alter (repeatable)")
    parser.add_argument("--replica-assignment", metavar="ASSIGNMENT",
                        help="broker ids per partition: replicas joined by ':', partitions by "
                             "',' (e.g. 1:2,2:3 is two partitions with two replicas each)")
    common.add_flags(parser, {
        "--if-not-exists": "with --create: do nothing if the topic exists",
        "--if-exists": "with --alter, --describe or --delete: do nothing if no topic matches",
        "--exclude-internal": "leave out internal topics (__consumer_offsets, __transaction_state)",
        "--under-replicated-partitions": "with --describe: only partitions whose ISR is smaller "
                                         "than the replica set",
        "--unavailable-partitions": "with --describe: only partitions without a live leader",
        "--topics-with-overrides": "with --describe: only topics that have non-default configs",
    })


# option -> the actions it may be used with
_OPTION_ACTIONS = {
    "partitions": ("create", "alter"),
    "replication_factor": ("create",),
    "config": ("create", "alter"),
    "replica_assignment": ("create", "alter"),
    "if_not_exists": ("create",),
    "if_exists": ("alter", "describe", "delete"),
    "under_replicated_partitions": ("describe",),
    "unavailable_partitions": ("describe",),
    "topics_with_overrides": ("describe",),
}


def run(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AdminClient

    action = common.chosen_action(args, ACTIONS)
    try:
        _check_args(args, action)
        conf = common.client_config(args.bootstrap_server, args.command_config)
        return _ACTION_FUNCS[action](AdminClient(conf), args)
    except (*common.client_errors(), TimeoutError) as e:
        print(f"Error while executing topic command : {common.error_text(e)}", file=sys.stderr)
        return 1


def _check_args(args: argparse.Namespace, action: str) -> None:
    for option, actions in _OPTION_ACTIONS.items():
        if getattr(args, option) not in (None, False, []) and action not in actions:
            raise ToolError(f"{common.option_name(option)} can only be used with "
                            + " or ".join(f"--{a}" for a in actions))
    if action in ("create", "alter", "delete") and not args.topic:
        raise ToolError(f"--topic is required with --{action}")
    if args.replica_assignment and args.replication_factor is not None:
        raise ToolError("--replication-factor cannot be used with --replica-assignment")
    if action == "create" and args.replica_assignment and args.partitions is not None:
        raise ToolError("--partitions cannot be used with --replica-assignment on --create")
    if action == "alter" and args.partitions is None:
        if not args.config or args.replica_assignment:
            raise ToolError("--alter needs --partitions (or --config only)")
    if args.partitions is not None and args.partitions < 1:
        raise ToolError("The partitions must be greater than 0")
    rf = args.replication_factor
    if rf is not None and not 1 <= rf <= 32767:
        raise ToolError("The replication factor must be between 1 and 32767 inclusive")


def parse_replica_assignment(text: str) -> list[list[int]]:
    """Kafka's format: "1:2,2:3" -> [[1, 2], [2, 3]] (one list of broker ids per partition)."""
    assignment: list[list[int]] = []
    for index, part in enumerate(text.split(",")):
        try:
            brokers = [int(b.strip()) for b in part.split(":")]
        except ValueError:
            raise ToolError(f"Invalid replica assignment {text!r}: broker ids must be "
                            "integers, replicas separated by ':', partitions by ','") from None
        dupes = sorted({b for b in brokers if brokers.count(b) > 1})
        if dupes:
            raise ToolError("Partition replica lists may not contain duplicate entries: "
                            + ",".join(map(str, dupes)))
        if assignment and len(brokers) != len(assignment[0]):
            raise ToolError(f"Partition {index} has different replication factor: {brokers}")
        assignment.append(brokers)
    return assignment


def _result(future):
    return future.result(timeout=TIMEOUT + 10)


def _matching_topics(admin, pattern: str | None, exclude_internal: bool) -> list[str]:
    names = sorted(admin.list_topics(timeout=TIMEOUT).topics)
    if exclude_internal:
        names = [n for n in names if n not in INTERNAL_TOPICS]
    if pattern is None:
        return names
    # Like Kafka's include list: a comma separates alternatives, quotes are dropped.
    regex = pattern.strip().replace(",", "|").replace(" ", "").strip("'\"")
    try:
        compiled = re.compile(regex)
    except re.error:
        return [n for n in names if n == pattern]
    return [n for n in names if compiled.fullmatch(n)]


def _on_existing_topics(action):
    """`action(admin, args, topics)` on the topics --topic matches (all without it); an error
    when it matches none, unless --if-exists: then nothing is done."""
    def run(admin, args: argparse.Namespace) -> int:
        topics = _matching_topics(admin, args.topic, args.exclude_internal)
        if args.topic and not topics and not args.if_exists:
            raise ToolError(f"Topic '{args.topic}' does not exist as expected")
        return action(admin, args, topics) if topics else 0
    return run


def _create(admin, args) -> int:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    configs = common.parse_key_values(args.config, "--config")
    if args.replica_assignment:
        assignment = parse_replica_assignment(args.replica_assignment)
        new = NewTopic(args.topic, num_partitions=len(assignment), replication_factor=-1,
                       replica_assignment=assignment, config=configs)
    else:
        new = NewTopic(args.topic, num_partitions=args.partitions or -1,
                       replication_factor=args.replication_factor or -1, config=configs)
    if "." in args.topic and "_" in args.topic:
        print("WARNING: Due to limitations in metric names, topics with a period ('.') or "
              "underscore ('_') could collide. To avoid issues it is best to use either, "
              "but not both.", file=sys.stderr)
    future = admin.create_topics([new], request_timeout=TIMEOUT)[args.topic]
    try:
        _result(future)
    except KafkaException as e:
        if args.if_not_exists and e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return 0
        raise
    print(f"Created topic {args.topic}.")
    return 0


def _list(admin, args) -> int:
    for name in _matching_topics(admin, args.topic, args.exclude_internal):
        print(name)
    return 0


def _delete(admin, args, topics: list[str]) -> int:
    futures = admin.delete_topics(topics, request_timeout=TIMEOUT, operation_timeout=TIMEOUT)
    for name in topics:
        _result(futures[name])
    return 0


def _alter(admin, args, topics: list[str]) -> int:
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewPartitions,
        ResourceType,
    )

    if args.partitions is not None:
        assignment = (parse_replica_assignment(args.replica_assignment)
                      if args.replica_assignment else None)
        requests = []
        if assignment is not None:
            described = admin.describe_topics(TopicCollection(topics), request_timeout=TIMEOUT)
        for name in topics:
            if assignment is None:
                requests.append(NewPartitions(name, args.partitions))
            else:
                current = len(_result(described[name]).partitions)
                requests.append(NewPartitions(name, args.partitions, assignment[current:]))
        futures = admin.create_partitions(requests, request_timeout=TIMEOUT,
                                          operation_timeout=TIMEOUT)
        for name in topics:
            _result(futures[name])
    if args.config:
        configs = common.parse_key_values(args.config, "--config")
        resources = [
            ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in configs.items()
            ])
            for name in topics
        ]
        futures = admin.incremental_alter_configs(resources, request_timeout=TIMEOUT)
        for future in futures.values():
            _result(future)
    return 0


def _describe(admin, args, topics: list[str]) -> int:
    from confluent_kafka import KafkaException, TopicCollection
    from confluent_kafka.admin import ConfigResource, ResourceType

    described = admin.describe_topics(TopicCollection(topics), request_timeout=TIMEOUT)
    config_futures = admin.describe_configs(
        [ConfigResource(ResourceType.TOPIC, name) for name in topics], request_timeout=TIMEOUT)
    overrides: dict[str, str] = {}
    for resource, future in config_futures.items():
        try:
            entries = _result(future).values()
        except (KafkaException, TimeoutError) as e:
            print(f"WARNING: could not describe configs of topic '{resource.name}': "
                  f"{common.error_text(e)}", file=sys.stderr)
            entries = []
        overrides[resource.name] = ",".join(
            f"{e.name}={'' if e.value is None else e.value}"
            for e in sorted(entries, key=lambda e: e.name) if not e.is_default)
    live_brokers = set(admin.list_topics(timeout=TIMEOUT).brokers)

    partition_filters = args.under_replicated_partitions or args.unavailable_partitions
    for name in topics:
        desc = _result(described[name])
        if args.exclude_internal and desc.is_internal:
            continue
        partitions = sorted(desc.partitions, key=lambda p: p.id)
        if args.topics_with_overrides and not overrides.get(name):
            continue
        if not partition_filters:
            print(_topic_line(desc, partitions, overrides.get(name, "")))
        if args.topics_with_overrides:
            continue
        for p in partitions:
            under = len(p.isr) < len(p.replicas)
            unavailable = p.leader is None or p.leader.id not in live_brokers
            if partition_filters and not (
                (args.under_replicated_partitions and under)
                or (args.unavailable_partitions and unavailable)
            ):
                continue
            print(_partition_line(name, p))
    return 0


def _topic_line(desc, partitions, configs: str) -> str:
    line = f"Topic: {desc.name}"
    topic_id = desc.topic_id
    if topic_id is not None and (topic_id.get_most_significant_bits()
                                 or topic_id.get_least_significant_bits()):
        line += f"\tTopicId: {_kafka_uuid(topic_id)}"
    rf = len(partitions[0].replicas) if partitions else 0
    return line + f"\tPartitionCount: {len(partitions)}\tReplicationFactor: {rf}\tConfigs: {configs}"


def _partition_line(topic: str, p) -> str:
    leader = "none" if p.leader is None or p.leader.id < 0 else str(p.leader.id)
    replicas = ",".join(str(n.id) for n in p.replicas)
    isr = ",".join(str(n.id) for n in p.isr)
    return f"\tTopic: {topic}\tPartition: {p.id}\tLeader: {leader}\tReplicas: {replicas}\tIsr: {isr}"


_ACTION_FUNCS = {"create": _create, "list": _list, "describe": _on_existing_topics(_describe),
                 "alter": _on_existing_topics(_alter), "delete": _on_existing_topics(_delete)}


def _kafka_uuid(topic_id) -> str:
    """A topic id as Kafka prints it: URL-safe base64 of its 16 bytes, no padding."""
    import base64

    raw = (topic_id.get_most_significant_bits() % (1 << 64)).to_bytes(8, "big") + \
        (topic_id.get_least_significant_bits() % (1 << 64)).to_bytes(8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
