"""What the actions of `strom consumer-groups` share: GroupAdmin (confluent-kafka's
AdminClient with the tool's timeout, and the group, offset and metadata look-ups the actions
make), Kafka's texts for error codes and names for group states and types, and the table
layout Kafka's kafka-consumer-groups.sh prints."""

from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace

from strom.cli._common import error_text

MISSING = "-"
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

# -- helpers -----------------------------------------------------------------------------------


def kafka_message(exc: BaseException) -> str:
    """Kafka's text for a broker error code, else confluent-kafka's description."""
    arg = exc.args[0] if exc.args else None
    code = arg.code() if arg is not None and hasattr(arg, "code") else None
    if isinstance(code, int) and code in KAFKA_MESSAGES:
        return KAFKA_MESSAGES[code]
    return error_text(exc)


def state_name(state) -> str:
    name = getattr(state, "name", str(state))
    return {
        "PREPARING_REBALANCING": "PreparingRebalance",
        "COMPLETING_REBALANCING": "CompletingRebalance",
        "STABLE": "Stable",
        "DEAD": "Dead",
        "EMPTY": "Empty",
    }.get(name, "Unknown")


def type_name(group_type) -> str:
    name = getattr(group_type, "name", str(group_type))
    return {"CLASSIC": "Classic", "CONSUMER": "Consumer"}.get(name, "Unknown")


def line(widths: list[int], values: list[object]) -> str:
    """Kafka's `%-Ns %-Ns ... %s`: each column padded to its width, the last one not."""
    cells = [str(v).ljust(w) for w, v in zip(widths, values[:-1], strict=False)]
    return " ".join([*cells, str(values[-1])]).rstrip()


def err(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr)


class GroupAdmin:
    """The AdminClient and the parsed command line; `failed` is set by an action that
    reports an error and goes on (the exit status is then 1)."""

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


def code_message(code: int) -> str:
    if code in KAFKA_MESSAGES:
        return KAFKA_MESSAGES[code]
    from confluent_kafka import KafkaError

    return KafkaError(code).str()
