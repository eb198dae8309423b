"""Monitoring a real 3-broker cluster as a Kafka team would (issue 14): Debian's Prometheus
scrapes every broker with the shipped monitoring/prometheus.yml and loads the shipped
alert rules; load is driven, a group commits offset 0, a broker is killed, the group
catches up. At each phase every query of monitoring/dashboard-queries.yml (the Strimzi
dashboards' panels) returns its expected value through Prometheus' HTTP API, every alert
rule evaluates, and every panel of strom's own Grafana dashboard parses and answers."""

from __future__ import annotations

import json
import operator
import re

import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition

from strom.testing.cluster import wait_until
from strom.testing.kafka import create_topics
from strom.testing.metrics import matching, scrape
from strom.testing.prometheus import (
    MONITORING,
    PrometheusProcess,
    find_prometheus,
    scrape_config,
)

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(find_prometheus() is None,
                       reason="prometheus is not installed (apt-get install prometheus)"),
]

TOPIC = "orders"
GROUP = "billing"
RECORDS = 300
OPS = {"=": operator.eq, ">": operator.gt, ">=": operator.ge}


def _queries() -> tuple[dict, list[dict]]:
    spec = yaml.safe_load((MONITORING / "dashboard-queries.yml").read_text())
    return spec["variables"], spec["queries"]


def _substitute(expr: str, variables: dict) -> str:
    # longest names first: $kafka_topic before $topic
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("$" + name, variables[name])
    return expr


def _meets(result: list, expectation: str) -> bool:
    if expectation == "any":
        return bool(result)
    m = re.fullmatch(r"(>=|=|>)(-?\d+(?:\.\d+)?)", expectation)
    assert m, f"bad expectation {expectation!r}"
    return bool(result) and all(OPS[m.group(1)](v, float(m.group(2))) for _, v in result)


def _check_phase(prom: PrometheusProcess, phase: str, timeout: float = 30) -> None:
    """Every query with an expectation for `phase` meets it (each within `timeout`: the
    figures move as scrapes arrive)."""
    variables, queries = _queries()
    wanted = [(q["panel"], _substitute(q["expr"], variables), q[phase])
              for q in queries if phase in q]
    assert wanted, phase
    pending = list(wanted)

    def all_met():
        nonlocal pending
        pending = [(panel, expr, want) for panel, expr, want in pending
                   if not _meets(prom.query(expr), want)]
        return not pending

    try:
        wait_until(all_met, timeout, interval=0.5, what=phase)
    except TimeoutError:
        details = [(panel, want, prom.query(expr)) for panel, expr, want in pending]
        pytest.fail(f"{phase}: panels not as expected: {details}")


def _check_lag_of_partitions_the_coordinator_does_not_host(cluster, consumer, ports):
    """A topic with one replica per partition, spread over the brokers: the group's
    coordinator asks the other partitions' leaders for their end offsets, so each lag
    series appears once in the cluster, with the right value."""
    create_topics(cluster.bootstrap, [("audit", 3)], replication_factor=1)
    producer = Producer({"bootstrap.servers": cluster.bootstrap})
    for i in range(30):
        producer.produce("audit", b"a", partition=i % 3)
    assert producer.flush(30) == 0
    consumer.commit(offsets=[TopicPartition("audit", p, 4) for p in range(3)],
                    asynchronous=False)

    def lag_once_each():
        per_broker = [matching(scrape(port), "kafka_consumergroup_lag", topic="audit")
                      for port in ports]
        merged = {labels: v for series in per_broker for labels, v in series.items()}
        return sum(len(series) for series in per_broker) == 3 and \
            sorted(merged.values()) == [6, 6, 6]

    wait_until(lag_once_each, 20, what="lag of every audit partition, once")
    consumer.commit(offsets=[TopicPartition("audit", p, 10) for p in range(3)],
                    asynchronous=False)  # caught up: the phases below see no audit lag


def _alert_rules(prom: PrometheusProcess) -> dict[str, dict]:
    groups = prom.api("rules")["groups"]
    return {r["name"]: r for g in groups for r in g["rules"]}


def test_prometheus_scrapes_the_cluster_and_dashboards_and_alerts_answer(make_cluster):
    cluster = make_cluster(3, metrics=True, overrides={"replica.lag.time.max.ms": 3000})
    create_topics(cluster.bootstrap, [(TOPIC, 3)], replication_factor=3)
    ports = [cluster.brokers[i].metrics_port for i in sorted(cluster.brokers)]
    with PrometheusProcess(scrape_config(ports)) as prom:
        wait_until(lambda: len(prom.query('up{job="strom-kafka"} == 1')) == 3 and
                   len(prom.query('up{job="strom-kafka-exporter"} == 1')) == 3, 30,
                   what="every broker scraped by both jobs")
        # load, spread over a few scrapes so that rates and increases see it
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all",
                             "linger.ms": 5})
        for i in range(RECORDS):
            producer.produce(TOPIC, b"x" * 100, key=str(i).encode(), partition=i % 3)
            if i % 100 == 99:
                assert producer.flush(30) == 0
                wait_until(lambda: True, 1.2)  # at least one scrape in between
        consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": GROUP,
                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        try:
            consumer.commit(offsets=[TopicPartition(TOPIC, p, 0) for p in range(3)],
                            asynchronous=False)
            _check_phase(prom, "loaded")
            _check_lag_of_partitions_the_coordinator_does_not_host(cluster, consumer, ports)

            # the exporter job holds only kafka_exporter's names, the broker job none
            assert not prom.query('{job="strom-kafka", __name__=~"kafka_consumergroup_.+"}')
            assert not prom.query('{job="strom-kafka-exporter", '
                                  '__name__=~"kafka_server_.+"}')
            rules = _alert_rules(prom)
            assert {"KafkaBrokerDown", "KafkaUnderReplicatedPartitions",
                    "KafkaOfflinePartitions", "KafkaNoActiveController",
                    "KafkaMultipleActiveControllers", "KafkaUnderMinIsrPartitions",
                    "KafkaOfflineLogDirectories", "KafkaConsumerGroupLag"} <= set(rules)
            for rule in rules.values():  # every expression parses and evaluates
                prom.query(rule["query"])
                assert rule["health"] in ("ok", "unknown"), rule

            victim = next(i for i in sorted(cluster.brokers)
                          if i != cluster.controller_id())
            cluster.kill(victim)
            _check_phase(prom, "killed", timeout=60)
            firing = wait_until(lambda: {a["labels"]["alertname"] for a in
                                         prom.api("alerts")["alerts"]}, 30,
                                what="alerts pending or firing")
            assert {"KafkaUnderReplicatedPartitions"} <= firing, firing

            consumer.subscribe([TOPIC])
            read = 0
            while read < RECORDS:
                msg = consumer.poll(10)
                assert msg is not None, f"consumer stalled after {read} records"
                if not msg.error():
                    read += 1
            consumer.commit(asynchronous=False)
            _check_phase(prom, "caught_up")
        finally:
            consumer.close()

        # every panel of strom's own dashboard parses and answers
        dashboard = json.loads((MONITORING / "grafana" / "strom-dashboard.json").read_text())
        empty = []
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                result = prom.query(target["expr"].replace("$__rate_interval", "1m"))
                if not result:
                    empty.append(panel["title"])
        assert not empty, f"panels without data: {empty}"
