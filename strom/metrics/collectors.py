"""Prometheus collectors: the broker's state and stats read at scrape time, named as the
dashboards that watch Kafka name them.

Two families of names:
- Kafka's MBeans as Strimzi's JMX exporter rules turn them into Prometheus names
  (`kafka_server_brokertopicmetrics_messagesin_total{topic}`,
  `kafka_server_replicamanager_underreplicatedpartitions`, ...): `BrokerCollector`;
- kafka_exporter's topic, partition and consumer-group names (`kafka_topic_partition_*`,
  `kafka_consumergroup_lag`, `kafka_brokers`, ...): `ClusterCollector`. Each figure is
  emitted by exactly one broker (a partition's leader, a group's coordinator, the active
  controller), so a sum over the cluster's brokers is the cluster's figure.

The collectors run on the event loop (the endpoint calls them there), so they read the
broker's objects without locks; they only read. The broker object is duck-typed: its
`replicas`, `cache`, `controller`, `groups`, `logs`, `loop_lag`, `served` and `stats`
attributes appear during start-up, and a scrape before they exist answers what it can.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from strom.metrics.stats import LATENCY_BUCKETS_MS, Latency, RequestStats, TopicStats

# TopicStats field -> the BrokerTopicMetrics meter name (Strimzi: lower case, no PerSec)
TOPIC_METERS = (
    ("messages_in", "messagesin", "Messages appended (records), from MessagesInPerSec"),
    ("bytes_in", "bytesin", "Bytes produced by clients, from BytesInPerSec"),
    ("bytes_out", "bytesout", "Bytes fetched by consumers, from BytesOutPerSec"),
    ("produce_requests", "totalproducerequests",
     "Produce requests per partition, from TotalProduceRequestsPerSec"),
    ("failed_produce_requests", "failedproducerequests",
     "Failed produce requests per partition, from FailedProduceRequestsPerSec"),
    ("fetch_requests", "totalfetchrequests",
     "Fetch requests per partition, from TotalFetchRequestsPerSec"),
    ("failed_fetch_requests", "failedfetchrequests",
     "Failed fetch requests per partition, from FailedFetchRequestsPerSec"),
)
GROUP_STATES = {"STABLE": "numgroupsstable", "PREPARING_REBALANCE": "numgroupspreparingrebalance",
                "COMPLETING_REBALANCE": "numgroupscompletingrebalance", "EMPTY": "numgroupsempty",
                "DEAD": "numgroupsdead"}


def _summary(name: str, doc: str, label: str | None, series: dict[str, Latency], now: float
             ) -> Metric:
    """Kafka's Yammer histogram as Strimzi exports it: `name{quantile}` in ms and
    `name_count`; typed as a summary (with `_sum`), which is what it is."""
    m = Metric(name, doc, "summary")
    for value, latency in series.items():
        labels = {label: value} if label else {}
        for q, ms in latency.quantiles(now):
            m.add_sample(name, dict(labels, quantile=_q(q)), ms)
        m.add_sample(name + "_count", labels, latency.count)
        m.add_sample(name + "_sum", labels, latency.sum_ms)
    return m


def _q(q: float) -> str:
    return f"{q:.3f}".rstrip("0") if q >= 0.999 else f"{q:.2f}"


def _histogram_seconds(name: str, doc: str, label: str, series: dict[str, Latency]
                       ) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc, labels=[label])
    for value, latency in series.items():
        buckets, seen = [], 0
        for bound, count in zip(LATENCY_BUCKETS_MS, latency.counts, strict=False):
            seen += count
            buckets.append((repr(bound / 1000), seen))
        buckets.append(("+Inf", latency.count))
        h.add_metric([value], buckets, latency.sum_ms / 1000)
    return h


def _disk_io() -> tuple[int, int]:
    """Bytes this process made the block layer read and write (/proc/self/io, as Kafka's
    LinuxIoStats); zeros where the file does not exist."""
    try:
        with open("/proc/self/io") as f:
            fields = dict(line.split(": ", 1) for line in f.read().splitlines())
        return int(fields["read_bytes"]), int(fields["write_bytes"])
    except (OSError, KeyError, ValueError):
        return 0, 0


class BrokerCollector(Collector):
    """Kafka's broker MBeans under Strimzi's names (see the module docstring)."""

    def __init__(self, broker: Any, partition_level: bool = True,
                 request_stats: RequestStats | None = None,
                 flush_latency: Latency | None = None) -> None:
        self.broker = broker
        self.partition_level = partition_level
        self.request_stats = request_stats
        self.flush_latency = flush_latency

    def collect(self) -> Iterator[Metric]:
        b = self.broker
        now = time.monotonic()
        replicas = getattr(b, "replicas", None)
        yield from self._loop(b, now)
        yield from self._connections(b)
        read, written = _disk_io()
        yield GaugeMetricFamily("kafka_server_kafkaserver_linux_disk_read_bytes",
                                "Bytes read from disk by this process", value=read)
        yield GaugeMetricFamily("kafka_server_kafkaserver_linux_disk_write_bytes",
                                "Bytes written to disk by this process", value=written)
        if self.request_stats is not None:
            yield from self._requests(self.request_stats, now)
        flush = self.flush_latency
        if flush is not None:
            yield _summary("kafka_log_logflushstats_logflushrateandtimems",
                           "Time of one log flush (fsync) in ms", None, {"": flush}, now)
        if replicas is not None:
            yield from self._topic_meters(replicas.stats)
            yield from self._replica_manager(replicas)
            if self.partition_level:
                yield from self._partitions(replicas)
        logs = getattr(b, "logs", None)
        if logs is not None:
            offline = sum(1 for d in logs.log_dirs
                          if not (os.path.isdir(d) and os.access(d, os.W_OK)))
            yield GaugeMetricFamily("kafka_log_logmanager_offlinelogdirectorycount",
                                    "Log dirs this broker cannot use", value=offline)
        controller = getattr(b, "controller", None)
        if controller is not None:
            yield from self._controller(b, controller)
        groups = getattr(b, "groups", None)
        if groups is not None:
            yield from self._groups(groups)

    def _loop(self, b: Any, now: float) -> Iterator[Metric]:
        loop_lag = getattr(b, "loop_lag", None)
        if loop_lag is None:
            return
        idle = loop_lag.idle_fraction()
        doc = ("Fraction of time the event loop was idle (one loop does Kafka's network "
               "and request-handler work)")
        yield GaugeMetricFamily("kafka_server_kafkarequesthandlerpool_requesthandleravgidle_percent",
                                doc, value=idle)
        yield GaugeMetricFamily("kafka_network_socketserver_networkprocessoravgidle_percent",
                                doc, value=idle)
        h = HistogramMetricFamily("strom_event_loop_lag_seconds",
                                  "How late the event loop ran a timer")
        buckets, seen = [], 0
        for bound, count in zip(loop_lag.bounds_ms, loop_lag.total_counts, strict=False):
            seen += count
            buckets.append((repr(bound / 1000), seen))
        buckets.append(("+Inf", sum(loop_lag.total_counts)))
        h.add_metric([], buckets, loop_lag.total_ms / 1000)
        yield h

    def _connections(self, b: Any) -> Iterator[Metric]:
        served = getattr(b, "served", None)
        if served is None:
            return
        counts: dict[str, int] = {}
        for listener in served.values():
            counts[listener] = counts.get(listener, 0) + 1
        g = GaugeMetricFamily("kafka_server_socket_server_metrics_connection_count",
                              "Open client connections",
                              labels=["listener", "networkProcessor"])
        for listener in getattr(b, "listener_names", counts):
            g.add_metric([listener, "0"], counts.get(listener, 0))
        yield g

    def _requests(self, stats: RequestStats, now: float) -> Iterator[Metric]:
        c = CounterMetricFamily("kafka_network_requestmetrics_requests",
                                "Requests received, by API and version",
                                labels=["request", "version"])
        for (name, version), n in sorted(stats.requests.items()):
            c.add_metric([name, str(version)], n)
        yield c
        yield _summary("kafka_network_requestmetrics_totaltimems",
                       "Time from a request's parse to its response, in ms (quantiles of "
                       "the last one to two minutes)", "request", stats.latency, now)
        yield _histogram_seconds("strom_network_request_total_time_seconds",
                                 "Time from a request's parse to its response", "request",
                                 stats.latency)

    def _topic_meters(self, stats: Any) -> Iterator[Metric]:
        totals: TopicStats = stats.totals()
        for field, meter, doc in TOPIC_METERS:
            name = f"kafka_server_brokertopicmetrics_{meter}"
            c = CounterMetricFamily(name, doc, labels=["topic"])
            c.add_sample(name + "_total", {}, getattr(totals, field))
            for topic, s in stats.topics.items():
                c.add_metric([topic], getattr(s, field))
            yield c

    def _replica_manager(self, replicas: Any) -> Iterator[Metric]:
        hosted = leaders = under = under_min = at_min = 0
        for p in replicas.partitions.values():
            hosted += 1
            if not p.is_leader:
                continue
            leaders += 1
            isr = len(p.isr)
            if isr < len(p.replicas):
                under += 1
            min_isr = p.log.config.get("min.insync.replicas")
            if isr < min_isr:
                under_min += 1
            elif isr == min_isr:
                at_min += 1
        rm = "kafka_server_replicamanager_"
        yield GaugeMetricFamily(rm + "partitioncount", "Partitions hosted", value=hosted)
        yield GaugeMetricFamily(rm + "leadercount", "Partitions led", value=leaders)
        yield GaugeMetricFamily(rm + "underreplicatedpartitions",
                                "Led partitions whose ISR is smaller than their replicas",
                                value=under)
        yield GaugeMetricFamily(rm + "underminisrpartitioncount",
                                "Led partitions with fewer ISR members than "
                                "min.insync.replicas", value=under_min)
        yield GaugeMetricFamily(rm + "atminisrpartitioncount",
                                "Led partitions with exactly min.insync.replicas in the ISR",
                                value=at_min)
        yield GaugeMetricFamily(rm + "offlinereplicacount",
                                "Replicas on an offline log dir", value=0)
        yield CounterMetricFamily(rm + "isrshrinks", "ISR shrinks of led partitions",
                                  value=replicas.isr_shrinks)
        yield CounterMetricFamily(rm + "isrexpands", "ISR expansions of led partitions",
                                  value=replicas.isr_expands)

    def _partitions(self, replicas: Any) -> Iterator[Metric]:
        labels = ["topic", "partition"]
        fams = {name: GaugeMetricFamily(f"kafka_cluster_partition_{name}", doc, labels=labels)
                for name, doc in (
                    ("underreplicated", "1 if this led partition is under-replicated"),
                    ("underminisr", "1 if this led partition's ISR is below "
                                    "min.insync.replicas"),
                    ("atminisr", "1 if this led partition's ISR is at min.insync.replicas"),
                    ("replicascount", "Replicas of this led partition (0 on a follower)"),
                    ("insyncreplicascount", "ISR size of this led partition (0 on a "
                                            "follower)"))}
        logs = {name: GaugeMetricFamily(f"kafka_log_log_{name}", doc, labels=labels)
                for name, doc in (("size", "Bytes of this replica's log"),
                                  ("logstartoffset", "Log start offset of this replica"),
                                  ("logendoffset", "Log end offset of this replica"),
                                  ("numlogsegments", "Segments of this replica's log"))}
        for (topic, index), p in replicas.partitions.items():
            key = [topic, str(index)]
            plog = p.log
            logs["size"].add_metric(key, plog.size_in_bytes)
            logs["logstartoffset"].add_metric(key, plog.log_start_offset)
            logs["logendoffset"].add_metric(key, plog.log_end_offset)
            logs["numlogsegments"].add_metric(key, len(plog.segments))
            leader = p.is_leader
            isr = len(p.isr) if leader else 0
            n = len(p.replicas) if leader else 0
            min_isr = plog.config.get("min.insync.replicas")
            fams["underreplicated"].add_metric(key, int(leader and isr < n))
            fams["underminisr"].add_metric(key, int(leader and isr < min_isr))
            fams["atminisr"].add_metric(key, int(leader and isr == min_isr))
            fams["replicascount"].add_metric(key, n)
            fams["insyncreplicascount"].add_metric(key, isr)
        yield from fams.values()
        yield from logs.values()

    def _controller(self, b: Any, controller: Any) -> Iterator[Metric]:
        active = bool(controller.active)
        offline = 0
        partitions = 0
        cache = getattr(b, "cache", None)
        if active and cache is not None:
            for info in cache.topics.values():
                for pinfo in info.partitions.values():
                    partitions += 1
                    offline += pinfo.leader < 0
        kc = "kafka_controller_kafkacontroller_"
        yield GaugeMetricFamily(kc + "activecontrollercount",
                                "1 on the active controller, 0 elsewhere", value=int(active))
        yield GaugeMetricFamily(kc + "offlinepartitionscount",
                                "Partitions without a leader (active controller only)",
                                value=offline)
        yield GaugeMetricFamily(kc + "globalpartitioncount",
                                "Partitions in the cluster (active controller only)",
                                value=partitions)
        yield GaugeMetricFamily(kc + "globaltopiccount",
                                "Topics in the cluster (active controller only)",
                                value=len(cache.topics) if active and cache is not None else 0)
        yield CounterMetricFamily("kafka_controller_controllerstats_uncleanleaderelections",
                                  "Unclean leader elections made by this broker as controller",
                                  value=controller.unclean_leader_elections)

    def _groups(self, groups: Any) -> Iterator[Metric]:
        counts = dict.fromkeys(GROUP_STATES.values(), 0)
        n = offsets = 0
        for group in groups.registry:
            n += 1
            offsets += len(group.offsets)
            name = GROUP_STATES.get(getattr(group.state, "name", ""))
            if name is not None:
                counts[name] += 1
        gm = "kafka_coordinator_group_groupmetadatamanager_"
        yield GaugeMetricFamily(gm + "numgroups", "Groups this broker coordinates", value=n)
        yield GaugeMetricFamily(gm + "numoffsets", "Committed offsets of those groups",
                                value=offsets)
        for name, value in counts.items():
            yield GaugeMetricFamily(gm + name, "Coordinated groups in this state",
                                    value=value)


class ClusterCollector(Collector):
    """kafka_exporter's names, each series from the one broker responsible for it."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        b = self.broker
        replicas = getattr(b, "replicas", None)
        if replicas is not None:
            yield from self._partitions(replicas)
            groups = getattr(b, "groups", None)
            if groups is not None:
                yield from self._groups(groups, replicas)
        controller = getattr(b, "controller", None)
        cache = getattr(b, "cache", None)
        if controller is not None and cache is not None and controller.active:
            yield from self._cluster(cache)

    def _partitions(self, replicas: Any) -> Iterator[Metric]:
        labels = ["topic", "partition"]
        names = {
            "current_offset": "High watermark of the partition (kafka_exporter's newest offset)",
            "oldest_offset": "Log start offset of the partition",
            "leader": "Broker id of the partition's leader",
            "replicas": "Replicas of the partition",
            "in_sync_replica": "In-sync replicas of the partition",
            "leader_is_preferred": "1 if the leader is the first assigned replica",
            "under_replicated_partition": "1 if the ISR is smaller than the replicas",
        }
        fams = {k: GaugeMetricFamily(f"kafka_topic_partition_{k}", doc, labels=labels)
                for k, doc in names.items()}
        for (topic, index), p in replicas.partitions.items():
            if not p.is_leader:
                continue
            key = [topic, str(index)]
            fams["current_offset"].add_metric(key, p.high_watermark)
            fams["oldest_offset"].add_metric(key, p.log.log_start_offset)
            fams["leader"].add_metric(key, p.leader)
            fams["replicas"].add_metric(key, len(p.replicas))
            fams["in_sync_replica"].add_metric(key, len(p.isr))
            fams["leader_is_preferred"].add_metric(
                key, int(bool(p.replicas) and p.replicas[0] == p.leader))
            fams["under_replicated_partition"].add_metric(key, int(len(p.isr) < len(p.replicas)))
        yield from fams.values()

    def _groups(self, groups: Any, replicas: Any) -> Iterator[Metric]:
        """Committed offsets and lag of the groups this broker coordinates. The end offset
        is the high watermark this broker knows for the partition (as leader, or as a
        follower from its leader's fetch responses); a partition this broker does not host
        has no lag series here (docs/monitoring.md)."""
        group_labels = ["consumergroup", "topic", "partition"]
        current = GaugeMetricFamily("kafka_consumergroup_current_offset",
                                    "Committed offset of the group", labels=group_labels)
        lag = GaugeMetricFamily("kafka_consumergroup_lag",
                                "High watermark minus the committed offset (-1: none "
                                "committed)", labels=group_labels)
        current_sum = GaugeMetricFamily("kafka_consumergroup_current_offset_sum",
                                        "Committed offsets of the group, summed per topic",
                                        labels=["consumergroup", "topic"])
        lag_sum = GaugeMetricFamily("kafka_consumergroup_lag_sum",
                                    "Lag of the group, summed per topic",
                                    labels=["consumergroup", "topic"])
        members = GaugeMetricFamily("kafka_consumergroup_members", "Members of the group",
                                    labels=["consumergroup"])
        partitions = replicas.partitions
        for group in groups.registry:
            gid = group.group_id
            members.add_metric([gid], len(group.members))
            sums: dict[str, list[int]] = {}
            for (topic, index), committed in group.offsets.items():
                key = [gid, topic, str(index)]
                current.add_metric(key, committed.offset)
                p = partitions.get((topic, index))
                total = sums.setdefault(topic, [0, 0])
                total[0] += committed.offset
                if p is None:
                    continue
                hw = p.high_watermark
                value = max(hw - committed.offset, 0) if committed.offset >= 0 else -1
                lag.add_metric(key, value)
                if value > 0:
                    total[1] += value
            for topic, (offset_sum, lag_total) in sums.items():
                current_sum.add_metric([gid, topic], offset_sum)
                lag_sum.add_metric([gid, topic], lag_total)
        yield from (current, lag, current_sum, lag_sum, members)

    def _cluster(self, cache: Any) -> Iterator[Metric]:
        yield GaugeMetricFamily("kafka_brokers", "Brokers registered in the cluster",
                                value=len(cache.brokers))
        info = GaugeMetricFamily("kafka_broker_info", "A registered broker",
                                 labels=["id", "address"])
        for broker_id, broker in sorted(cache.brokers.items()):
            first = broker.endpoints[0] if broker.endpoints else None
            address = f"{first.host}:{first.port}" if first is not None else ""
            info.add_metric([str(broker_id), address], 1)
        yield info
        topics = GaugeMetricFamily("kafka_topic_partitions", "Partitions of the topic",
                                   labels=["topic"])
        for name, t in sorted(cache.topics.items()):
            topics.add_metric([name], len(t.partitions))
        yield topics


__all__ = ["BrokerCollector", "ClusterCollector"]
