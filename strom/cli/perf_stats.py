"""What the perf tools share: client properties given Kafka's way, the reachability check
that turns an unreachable bootstrap into one clear error, and the metrics table of
`--print-metrics` (Kafka's "Metric Name   Value" layout, from librdkafka's statistics)."""

from __future__ import annotations

import json
import time

from strom.cli import _common as common
from strom.cli._common import ToolError

# Java client settings librdkafka has no use for: dropped instead of failing the run, so a
# producer.config written for Kafka's tool works unchanged.
JAVA_ONLY = ("key.serializer", "value.serializer", "key.deserializer", "value.deserializer",
             "buffer.memory", "max.block.ms", "partition.assignment.strategy")


def client_properties(config_file: str | None, props: list[str] | None,
                      option: str) -> dict[str, str]:
    """The properties file's settings overridden by `KEY=VALUE` items, Java-only keys
    removed (`max.block.ms` is read by the caller first)."""
    return {**common.load_properties(config_file), **common.parse_key_values(props, option)}


def without_java_only(values: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in values.items() if k not in JAVA_ONLY}


def wait_for_topic(client, topic: str, timeout_s: float) -> None:
    """Wait up to `timeout_s` for Metadata naming `topic` (which may auto-create it);
    ToolError when the cluster cannot be reached or the topic does not appear."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ToolError(f"topic {topic!r} not available within "
                            f"{timeout_s * 1000:.0f} ms ({last})")
        try:
            md = client.list_topics(topic=topic, timeout=min(left, 5.0))
        except KafkaException as e:
            last = common.error_text(e)
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            continue
        t = md.topics.get(topic)
        if t is not None and t.error is None and t.partitions:
            return
        last = t.error.str() if t is not None and t.error is not None else "unknown topic"
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


class Statistics:
    """The latest librdkafka statistics (`stats_cb`), shown as Kafka's metrics table."""

    def __init__(self) -> None:
        self.latest: dict | None = None

    def __call__(self, text: str) -> None:
        try:
            self.latest = json.loads(text)
        except ValueError:
            pass

    def wait(self, client, timeout_s: float = 2.0) -> None:
        """Serve the client until one more statistics report arrived."""
        before = self.latest
        deadline = time.monotonic() + timeout_s
        while self.latest is before and time.monotonic() < deadline:
            client.poll(0.1)

    def table(self, group: str, names: dict[str, str], extra: dict[str, float]) -> str:
        """`names` maps Kafka's metric name to a top-level librdkafka statistic; `extra`
        adds values the tool measured itself."""
        stats = self.latest or {}
        tags = "{client-id=" + str(stats.get("client_id", "")) + "}"
        rows: dict[str, object] = {}
        for kafka_name, key in names.items():
            if key in stats:
                rows[f"{group}:{kafka_name}:{tags}"] = float(stats[key])
        brokers = [b for b in stats.get("brokers", {}).values() if b.get("nodeid", -1) >= 0]
        if brokers:
            rtts = [b["rtt"]["avg"] / 1000.0 for b in brokers if b.get("rtt", {}).get("cnt")]
            if rtts:
                rows[f"{group}:request-latency-avg:{tags}"] = sum(rtts) / len(rtts)
        for name, value in extra.items():
            rows[f"{group}:{name}:{tags}"] = float(value)
        width = max([len("Metric Name"), *map(len, rows)])
        lines = ["", f"{'Metric Name':<{width}}   Value"]
        for name in sorted(rows):
            lines.append(f"{name:<{width}} : {rows[name]:.3f}")
        return "\n".join(lines)
