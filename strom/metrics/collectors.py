"""Prometheus collectors: a snapshot of the broker (snapshot.py) and its stats, as the
dashboards that watch Kafka name them.

Two families of names:
- Kafka's MBeans as Strimzi's JMX exporter rules turn them into Prometheus names
  (`kafka_server_brokertopicmetrics_messagesin_total{topic}`,
  `kafka_server_replicamanager_underreplicatedpartitions`, ...): `BrokerCollector`;
- kafka_exporter's topic, partition and consumer-group names (`kafka_topic_partition_*`,
  `kafka_consumergroup_lag`, `kafka_brokers`, ...): `ClusterCollector`. Each figure is
  emitted by exactly one broker (a partition's leader, a group's coordinator, the active
  controller), so a sum over the cluster's brokers is the cluster's figure.

`collect` runs in the endpoint's worker thread, on the snapshot the endpoint took on the
loop just before (`current()`), so it never touches the broker's objects themselves; only
one scrape renders at a time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from strom.metrics.snapshot import Snapshot
from strom.metrics.stats import LATENCY_BUCKETS_MS, Latency, RequestStats

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
PARTITION_LABELS = ["topic", "partition"]


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


def _histogram(name: str, doc: str, labels: list[str],
               series: list[tuple[list[str], tuple[float, ...], list[int], float]]
               ) -> HistogramMetricFamily:
    """A Prometheus histogram in seconds from bucket counts over bounds in ms."""
    h = HistogramMetricFamily(name, doc, labels=labels)
    for values, bounds_ms, counts, sum_ms in series:
        buckets, seen = [], 0
        for bound, count in zip(bounds_ms, counts, strict=False):
            seen += count
            buckets.append((repr(bound / 1000), seen))
        buckets.append(("+Inf", sum(counts)))
        h.add_metric(values, buckets, sum_ms / 1000)
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

    def __init__(self, current: Callable[[], Snapshot], partition_level: bool = True,
                 request_stats: RequestStats | None = None,
                 flush_latency: Latency | None = None) -> None:
        self.current = current
        self.partition_level = partition_level
        self.request_stats = request_stats
        self.flush_latency = flush_latency

    def collect(self) -> Iterator[Metric]:
        s = self.current()
        now = s.taken
        yield from self._loop(s)
        if s.connections is not None:
            g = GaugeMetricFamily("kafka_server_socket_server_metrics_connection_count",
                                  "Open client connections",
                                  labels=["listener", "networkProcessor"])
            for listener, n in s.connections.items():
                g.add_metric([listener, "0"], n)
            yield g
        read, written = _disk_io()
        yield GaugeMetricFamily("kafka_server_kafkaserver_linux_disk_read_bytes",
                                "Bytes read from disk by this process", value=read)
        yield GaugeMetricFamily("kafka_server_kafkaserver_linux_disk_write_bytes",
                                "Bytes written to disk by this process", value=written)
        if self.request_stats is not None:
            yield from self._requests(self.request_stats, now)
        if self.flush_latency is not None:
            yield _summary("kafka_log_logflushstats_logflushrateandtimems",
                           "Time of one log flush (fsync) in ms", None,
                           {"": self.flush_latency}, now)
        if s.topic_stats is not None:
            yield from self._topic_meters(s)
        if s.partitions is not None:
            yield from self._replica_manager(s)
            if self.partition_level:
                yield from self._partitions(s)
        if s.log_dirs is not None:
            offline = sum(1 for d in s.log_dirs if d in s.offline_dirs
                          or not (os.path.isdir(d) and os.access(d, os.W_OK)))
            yield GaugeMetricFamily("kafka_log_logmanager_offlinelogdirectorycount",
                                    "Log dirs this broker cannot use", value=offline)
        if s.controller_active is not None:
            yield from self._controller(s)
        if s.groups is not None:
            yield from self._groups(s)
        if s.transactions is not None:
            yield from self._transactions(s)

    def _loop(self, s: Snapshot) -> Iterator[Metric]:
        if s.idle is not None:
            doc = ("Fraction of time the event loop was idle (one loop does Kafka's network "
                   "and request-handler work)")
            yield GaugeMetricFamily(
                "kafka_server_kafkarequesthandlerpool_requesthandleravgidle_percent", doc,
                value=s.idle)
            yield GaugeMetricFamily("kafka_network_socketserver_networkprocessoravgidle_percent",
                                    doc, value=s.idle)
        if s.loop_lag is not None:
            bounds, counts, total_ms = s.loop_lag
            yield _histogram("strom_event_loop_lag_seconds",
                             "How late the event loop ran a timer", [],
                             [([], bounds, counts, total_ms)])

    def _requests(self, stats: RequestStats, now: float) -> Iterator[Metric]:
        c = CounterMetricFamily("kafka_network_requestmetrics_requests",
                                "Requests received, by API and version",
                                labels=["request", "version"])
        for (name, version), n in sorted(stats.requests.items()):
            c.add_metric([name, str(version)], n)
        yield c
        latency = stats.latency
        yield _summary("kafka_network_requestmetrics_totaltimems",
                       "Time from a request's parse to its response, in ms (quantiles of "
                       "the last one to two minutes)", "request", latency, now)
        yield _histogram("strom_network_request_total_time_seconds",
                         "Time from a request's parse to its response", ["request"],
                         [([name], LATENCY_BUCKETS_MS, list(lat.counts), lat.sum_ms)
                          for name, lat in latency.items()])

    def _topic_meters(self, s: Snapshot) -> Iterator[Metric]:
        assert s.topic_stats is not None and s.topic_totals is not None
        for attr, meter, doc in TOPIC_METERS:
            name = f"kafka_server_brokertopicmetrics_{meter}"
            c = CounterMetricFamily(name, doc, labels=["topic"])
            c.add_sample(name + "_total", {}, getattr(s.topic_totals, attr))
            for topic, stats in s.topic_stats:
                c.add_metric([topic], getattr(stats, attr))
            yield c

    def _replica_manager(self, s: Snapshot) -> Iterator[Metric]:
        assert s.partitions is not None
        leaders = under = under_min = at_min = 0
        for p in s.partitions:
            if not p.is_leader:
                continue
            leaders += 1
            under += p.isr < p.replicas
            under_min += p.isr < p.min_isr
            at_min += p.isr == p.min_isr
        rm = "kafka_server_replicamanager_"
        yield GaugeMetricFamily(rm + "partitioncount", "Partitions hosted",
                                value=len(s.partitions))
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
                                "Replicas on an offline log dir",
                                value=s.offline_replicas)
        yield CounterMetricFamily(rm + "isrshrinks", "ISR shrinks of led partitions",
                                  value=s.isr_shrinks)
        yield CounterMetricFamily(rm + "isrexpands", "ISR expansions of led partitions",
                                  value=s.isr_expands)

    def _partitions(self, s: Snapshot) -> Iterator[Metric]:
        assert s.partitions is not None
        fams = {name: GaugeMetricFamily(f"kafka_cluster_partition_{name}", doc,
                                        labels=PARTITION_LABELS)
                for name, doc in (
                    ("underreplicated", "1 if this led partition is under-replicated"),
                    ("underminisr", "1 if this led partition's ISR is below "
                                    "min.insync.replicas"),
                    ("atminisr", "1 if this led partition's ISR is at min.insync.replicas"),
                    ("replicascount", "Replicas of this led partition (0 on a follower)"),
                    ("insyncreplicascount", "ISR size of this led partition (0 on a "
                                            "follower)"))}
        logs = {name: GaugeMetricFamily(f"kafka_log_log_{name}", doc, labels=PARTITION_LABELS)
                for name, doc in (("size", "Bytes of this replica's log"),
                                  ("logstartoffset", "Log start offset of this replica"),
                                  ("logendoffset", "Log end offset of this replica"),
                                  ("numlogsegments", "Segments of this replica's log"))}
        for p in s.partitions:
            key = [p.topic, str(p.index)]
            logs["size"].add_metric(key, p.size)
            logs["logstartoffset"].add_metric(key, p.log_start)
            logs["logendoffset"].add_metric(key, p.log_end)
            logs["numlogsegments"].add_metric(key, p.segments)
            leader = p.is_leader
            isr = p.isr if leader else 0
            n = p.replicas if leader else 0
            fams["underreplicated"].add_metric(key, int(leader and isr < n))
            fams["underminisr"].add_metric(key, int(leader and isr < p.min_isr))
            fams["atminisr"].add_metric(key, int(leader and isr == p.min_isr))
            fams["replicascount"].add_metric(key, n)
            fams["insyncreplicascount"].add_metric(key, isr)
        yield from fams.values()
        yield from logs.values()

    def _controller(self, s: Snapshot) -> Iterator[Metric]:
        active = bool(s.controller_active)
        kc = "kafka_controller_kafkacontroller_"
        yield GaugeMetricFamily(kc + "activecontrollercount",
                                "1 on the active controller, 0 elsewhere", value=int(active))
        yield GaugeMetricFamily(kc + "offlinepartitionscount",
                                "Partitions without a leader (active controller only)",
                                value=sum(offline for _, _, offline in s.topic_partitions))
        yield GaugeMetricFamily(kc + "globalpartitioncount",
                                "Partitions in the cluster (active controller only)",
                                value=sum(n for _, n, _ in s.topic_partitions))
        yield GaugeMetricFamily(kc + "globaltopiccount",
                                "Topics in the cluster (active controller only)",
                                value=len(s.topic_partitions))
        yield CounterMetricFamily("kafka_controller_controllerstats_uncleanleaderelections",
                                  "Unclean leader elections made by this broker as controller",
                                  value=s.unclean_elections)

    def _groups(self, s: Snapshot) -> Iterator[Metric]:
        assert s.groups is not None
        counts = dict.fromkeys(GROUP_STATES.values(), 0)
        for g in s.groups:
            name = GROUP_STATES.get(g.state)
            if name is not None:
                counts[name] += 1
        gm = "kafka_coordinator_group_groupmetadatamanager_"
        yield GaugeMetricFamily(gm + "numgroups", "Groups this broker coordinates",
                                value=len(s.groups))
        yield GaugeMetricFamily(gm + "numoffsets", "Committed offsets of those groups",
                                value=sum(len(g.offsets) for g in s.groups))
        for name, value in counts.items():
            yield GaugeMetricFamily(gm + name, "Coordinated groups in this state",
                                    value=value)


    def _transactions(self, s: Snapshot) -> Iterator[Metric]:
        t = s.transactions
        assert t is not None
        tm = "kafka_coordinator_transaction_transactionmarkerchannelmanager_"
        yield GaugeMetricFamily(tm + "unknowndestinationqueuesize",
                                "Transaction markers waiting for a partition leader",
                                value=t.unknown_destination)
        yield GaugeMetricFamily(tm + "logappendretryqueuesize",
                                "Transaction markers to be sent again", value=t.log_append_retry)
        tc = "kafka_server_transaction_coordinator_metrics_"
        yield GaugeMetricFamily(tc + "partition_load_time_max",
                                "Longest load of a __transaction_state partition (ms)",
                                value=t.load_time_max_ms)
        yield GaugeMetricFamily(tc + "partition_load_time_avg",
                                "Mean load time of __transaction_state partitions (ms)",
                                value=t.load_time_avg_ms)
        states = GaugeMetricFamily("strom_transaction_coordinator_transactions",
                                   "Transactional ids this broker coordinates, by state",
                                   labels=["state"])
        for name, count in sorted(t.states.items()):
            states.add_metric([name], count)
        yield states


class ClusterCollector(Collector):
    """kafka_exporter's names, each series from the one broker responsible for it."""

    def __init__(self, current: Callable[[], Snapshot]) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        s = self.current()
        if s.partitions is not None:
            yield from self._partitions(s)
            if s.groups is not None:
                yield from self._groups(s)
        if s.controller_active:
            yield from self._cluster(s)

    def _partitions(self, s: Snapshot) -> Iterator[Metric]:
        assert s.partitions is not None
        names = {
            "current_offset": "High watermark of the partition (kafka_exporter's newest offset)",
            "oldest_offset": "Log start offset of the partition",
            "leader": "Broker id of the partition's leader",
            "replicas": "Replicas of the partition",
            "in_sync_replica": "In-sync replicas of the partition",
            "leader_is_preferred": "1 if the leader is the first assigned replica",
            "under_replicated_partition": "1 if the ISR is smaller than the replicas",
        }
        fams = {k: GaugeMetricFamily(f"kafka_topic_partition_{k}", doc, labels=PARTITION_LABELS)
                for k, doc in names.items()}
        for p in s.partitions:
            if not p.is_leader:
                continue
            key = [p.topic, str(p.index)]
            fams["current_offset"].add_metric(key, p.high_watermark)
            fams["oldest_offset"].add_metric(key, p.log_start)
            fams["leader"].add_metric(key, p.leader)
            fams["replicas"].add_metric(key, p.replicas)
            fams["in_sync_replica"].add_metric(key, p.isr)
            fams["leader_is_preferred"].add_metric(key, int(p.preferred))
            fams["under_replicated_partition"].add_metric(key, int(p.isr < p.replicas))
        yield from fams.values()

    def _groups(self, s: Snapshot) -> Iterator[Metric]:
        """Committed offsets and lag of the groups this broker coordinates. The end offset
        is the high watermark this broker knows for the partition (as leader, or as a
        follower from its leader's fetch responses), else the one its leader gave for this
        scrape (`remote_ends`); a partition with neither has no lag series."""
        assert s.partitions is not None and s.groups is not None
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
        ends = dict(s.remote_ends)
        ends.update(((p.topic, p.index), p.high_watermark) for p in s.partitions)
        for g in s.groups:
            members.add_metric([g.group_id], g.members)
            sums: dict[str, list[int]] = {}
            for topic, index, offset in g.offsets:
                key = [g.group_id, topic, str(index)]
                current.add_metric(key, offset)
                total = sums.setdefault(topic, [0, 0])
                if offset < 0:  # assigned, nothing committed: lag -1 as kafka_exporter
                    lag.add_metric(key, -1)
                    continue
                total[0] += offset
                end = ends.get((topic, index))
                if end is None:
                    continue
                value = max(end - offset, 0)
                lag.add_metric(key, value)
                total[1] += value
            for topic, (offset_sum, lag_total) in sums.items():
                current_sum.add_metric([g.group_id, topic], offset_sum)
                lag_sum.add_metric([g.group_id, topic], lag_total)
        yield from (current, lag, current_sum, lag_sum, members)

    def _cluster(self, s: Snapshot) -> Iterator[Metric]:
        yield GaugeMetricFamily("kafka_brokers", "Brokers registered in the cluster",
                                value=len(s.brokers))
        info = GaugeMetricFamily("kafka_broker_info", "A registered broker",
                                 labels=["id", "address"])
        for broker_id, address in s.brokers:
            info.add_metric([str(broker_id), address], 1)
        yield info
        topics = GaugeMetricFamily("kafka_topic_partitions", "Partitions of the topic",
                                   labels=["topic"])
        for name, n, _ in s.topic_partitions:
            topics.add_metric([name], n)
        yield topics


__all__ = ["BrokerCollector", "ClusterCollector"]
