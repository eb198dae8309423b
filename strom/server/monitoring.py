"""The broker's monitoring: the metrics endpoint set by `metrics.listener`, its registry
(strom's collectors plus prometheus_client's process, platform and GC collectors) and the
readiness the endpoint's /readyz reports.

Everything is off unless `metrics.listener` is set: then the Dispatcher times requests,
the flush job its fsyncs, and the ReplicaManager counts produces and fetches per topic
(`BrokerTopicStats.enabled`); without it none of them counts anything.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from strom.config import BrokerConfig, parse_listener
from strom.metrics import snapshot
from strom.metrics.collectors import BrokerCollector, ClusterCollector
from strom.metrics.endpoint import MetricsEndpoint
from strom.metrics.stats import Latency, RequestStats
from strom.server.end_offsets import RemoteEndOffsets


class Monitoring:
    """The endpoint and the stats only it needs; `broker` is read at scrape time."""

    def __init__(self, broker: Any, host: str, port: int, partition_level: bool) -> None:
        self.broker = broker
        self.request_stats = RequestStats()
        self.flush_latency = Latency()
        registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.snapshot = snapshot.Snapshot()
        self.remote_ends: RemoteEndOffsets | None = None
        registry.register(BrokerCollector(self._current, partition_level,
                                          self.request_stats, self.flush_latency))
        registry.register(ClusterCollector(self._current))
        self.registry = registry
        self.endpoint = MetricsEndpoint(host, port, registry, self.not_ready, self._prepare)

    async def _prepare(self) -> None:
        """Before a scrape, on the loop: the end offsets of the partitions whose committed
        offsets this broker's groups hold but which it does not host, then the snapshot."""
        b = self.broker
        cache, groups, replicas = (getattr(b, name, None)
                                   for name in ("cache", "groups", "replicas"))
        if cache is not None and groups is not None and replicas is not None:
            if self.remote_ends is None:
                listener = b.config.get("inter.broker.listener.name") or \
                    b.config.listeners()[0][0]
                self.remote_ends = RemoteEndOffsets(b.broker_id, cache, listener)
            hosted = replicas.partitions
            await self.remote_ends.refresh({tp for g in groups.registry for tp in g.offsets
                                            if tp not in hosted})
        self.snapshot = snapshot.take(b, self.remote_ends.ends if self.remote_ends else None)

    def _current(self) -> snapshot.Snapshot:
        return self.snapshot

    @classmethod
    def from_config(cls, broker: Any, config: BrokerConfig) -> Monitoring | None:
        listener = config.get("metrics.listener")
        if not listener:
            return None
        _, host, port = parse_listener(listener)
        return cls(broker, host, port, config.get("metrics.partition.level"))

    async def start(self) -> None:
        await self.endpoint.start()

    async def close(self) -> None:
        await self.endpoint.close()
        if self.remote_ends is not None:
            await self.remote_ends.close()

    def not_ready(self) -> str | None:
        """Why the broker is not ready to serve (None: it is): Kafka's RUNNING state
        (registered, log dirs loaded, listening) and, for a rolling restart, every
        hosted replica caught up (in its ISR)."""
        b = self.broker
        if b.stopping.is_set():
            return "shutting down"
        if not getattr(b, "started", False):
            return "starting"
        behind = [p for p in b.replicas.partitions.values()
                  if not p.is_leader and b.broker_id not in p.isr]
        if behind:
            return f"{len(behind)} replicas not in their ISR yet (e.g. {behind[0]})"
        return None
