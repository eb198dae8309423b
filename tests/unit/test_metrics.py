"""strom.metrics: the hot-path stats, the collectors' names and values, and the endpoint's
answers to good and bad HTTP input (in process, on a free port)."""

from __future__ import annotations

import asyncio
import math
import socket
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from strom.clock import ManualClock
from strom.config import BrokerConfig, ConfigError
from strom.metrics import endpoint as endpoint_module
from strom.metrics.collectors import BrokerCollector, ClusterCollector
from strom.metrics.endpoint import MetricsEndpoint
from strom.metrics.snapshot import take
from strom.metrics.stats import BrokerTopicStats, Latency, RequestStats
from strom.server.loop_lag import LoopLagMonitor


def test_deleted_topic_series_go_but_totals_keep_its_counts():
    stats = BrokerTopicStats()
    a, b = stats.topic("a"), stats.topic("b")
    a.messages_in += 5
    b.messages_in += 7
    stats.unattributed.failed_produce_requests += 1
    assert stats.topic("a") is a  # the partition keeps the same object
    stats.remove("a")
    assert set(stats.topics) == {"b"}
    totals = stats.totals()
    assert totals.messages_in == 12 and totals.failed_produce_requests == 1


def test_latency_quantiles_are_bucket_bounds_and_nan_when_idle():
    lat = Latency()
    assert all(math.isnan(v) for _, v in lat.quantiles(0.0))
    for _ in range(99):
        lat.record(0.3)  # the (0.25, 0.5] bucket
    lat.record(40)  # (25, 50]
    q = dict(lat.quantiles(1.0))
    assert q[0.5] == 0.5 and q[0.99] == 0.5 and q[0.999] == 50
    assert lat.count == 100 and lat.sum_ms == pytest.approx(99 * 0.3 + 40)


def test_request_stats_count_by_version_and_time_by_name():
    rs = RequestStats()
    produce = rs.api(0, "Produce", 12)
    assert rs.api(0, "Produce", 12) is produce
    for ms in (1.0, 2.0):
        produce.versions[9] += 1
        produce.latency.record(ms)
    fetch = rs.api(1, "Fetch", 17)
    fetch.versions[12] += 1
    rs.fetch_follower.record(3.0)  # a Fetch is timed once, by who sent it
    assert rs.requests == {("Produce", 9): 2, ("Fetch", 12): 1}
    latency = rs.latency
    assert latency["Produce"].count == 2 and latency["FetchFollower"].count == 1
    assert "FetchConsumer" not in latency  # none yet: no series
    rs.fetch_consumer.record(30.0)
    merged = rs.latency["Fetch"]  # Kafka's third name: the sum of both
    assert merged.count == 2 and merged.sum_ms == pytest.approx(33.0)


def test_loop_idle_fraction_from_thread_cpu_time():
    clock = ManualClock()
    cpu = [0.0]
    m = LoopLagMonitor(clock, cpu_time=lambda: cpu[0])
    m._idle_from = (clock.monotonic(), cpu[0])  # as start() does on a loop
    clock.advance(2000)
    cpu[0] = 0.5  # busy 0.5 s of 2 s
    assert m.idle_fraction() == pytest.approx(0.75)
    clock.advance(100)  # under the 1 s window: the last value
    cpu[0] = 0.6
    assert m.idle_fraction() == pytest.approx(0.75)


@pytest.mark.parametrize("value", ["127.0.0.1:9404", "PLAINTEXT://127.0.0.1:9404",
                                   "http://127.0.0.1"])
def test_metrics_listener_must_be_an_http_address(value):
    with pytest.raises(ConfigError):
        BrokerConfig.load(None, [f"metrics.listener={value}"])
    assert BrokerConfig.load(None, ["metrics.listener=http://0.0.0.0:9404"]).get(
        "metrics.listener") == "http://0.0.0.0:9404"


# --- collectors on a broker made of plain objects --------------------------------------------

def _partition(topic, index, leader, replicas, isr, hw=10, min_isr=1, stats=None):
    log = SimpleNamespace(size_in_bytes=123, log_start_offset=2, log_end_offset=hw,
                          segments=[1, 2], config={"min.insync.replicas": min_isr})
    return SimpleNamespace(topic=topic, index=index, is_leader=leader == 1, leader=leader,
                           replicas=replicas, isr=isr, high_watermark=hw, log=log)


def _fake_broker():
    stats = BrokerTopicStats()
    stats.topic("t").messages_in = 3
    partitions = {
        ("t", 0): _partition("t", 0, 1, (1, 2, 3), (1, 2, 3)),
        ("t", 1): _partition("t", 1, 1, (2, 1, 3), (1,), min_isr=2),  # under-replicated
        ("t", 2): _partition("t", 2, 2, (2, 1, 3), (2, 1, 3)),  # a follower here
    }
    replicas = SimpleNamespace(partitions=partitions, stats=stats, isr_shrinks=4,
                               isr_expands=1)
    committed = SimpleNamespace(offset=4)
    groups = SimpleNamespace(registry=[SimpleNamespace(
        group_id="g", members={"m": 1}, state=SimpleNamespace(name="STABLE"),
        offsets={("t", 0): committed, ("t", 2): SimpleNamespace(offset=10),
                 ("other", 0): committed})])
    endpoint = SimpleNamespace(host="h", port=9092)
    cache = SimpleNamespace(
        brokers={1: SimpleNamespace(endpoints=(endpoint,)), 2: SimpleNamespace(endpoints=())},
        topics={"t": SimpleNamespace(partitions={
            0: SimpleNamespace(leader=1), 1: SimpleNamespace(leader=1),
            2: SimpleNamespace(leader=-1)})})
    controller = SimpleNamespace(active=True, unclean_leader_elections=2)
    return SimpleNamespace(replicas=replicas, groups=groups, cache=cache,
                           controller=controller, served={"a": "PLAINTEXT"},
                           listener_names=["PLAINTEXT", "INTERNAL"], logs=None)


def _on(broker):
    """The `current` of a collector: a snapshot of `broker`, taken now."""
    snap = take(broker)
    return lambda: snap


def _exposed(*collectors):
    registry = CollectorRegistry(auto_describe=False)
    for c in collectors:
        registry.register(c)
    from prometheus_client import generate_latest
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_broker_collector_names_and_values():
    b = _fake_broker()
    out = _exposed(BrokerCollector(_on(b)))
    assert out[("kafka_server_brokertopicmetrics_messagesin_total", (("topic", "t"),))] == 3
    assert out[("kafka_server_brokertopicmetrics_messagesin_total", ())] == 3
    assert out[("kafka_server_replicamanager_partitioncount", ())] == 3
    assert out[("kafka_server_replicamanager_leadercount", ())] == 2
    assert out[("kafka_server_replicamanager_underreplicatedpartitions", ())] == 1
    assert out[("kafka_server_replicamanager_underminisrpartitioncount", ())] == 1
    assert out[("kafka_server_replicamanager_isrshrinks_total", ())] == 4
    assert out[("kafka_controller_kafkacontroller_activecontrollercount", ())] == 1
    assert out[("kafka_controller_kafkacontroller_offlinepartitionscount", ())] == 1
    assert out[("kafka_controller_controllerstats_uncleanleaderelections_total", ())] == 2
    assert out[("kafka_cluster_partition_underreplicated",
                (("partition", "1"), ("topic", "t")))] == 1
    assert out[("kafka_cluster_partition_replicascount",
                (("partition", "2"), ("topic", "t")))] == 0  # a follower, as Kafka
    assert out[("kafka_log_log_size", (("partition", "2"), ("topic", "t")))] == 123
    assert out[("kafka_server_socket_server_metrics_connection_count",
                (("listener", "INTERNAL"), ("networkProcessor", "0")))] == 0
    assert out[("kafka_coordinator_group_groupmetadatamanager_numgroupsstable", ())] == 1
    without = _exposed(BrokerCollector(_on(b), partition_level=False))
    assert not any(name.startswith(("kafka_cluster_partition", "kafka_log_log_"))
                   for name, _ in without)


def test_cluster_collector_emits_what_this_broker_is_responsible_for():
    out = _exposed(ClusterCollector(_on(_fake_broker())))
    offsets = {k: v for k, v in out.items() if k[0] == "kafka_topic_partition_current_offset"}
    assert set(offsets) == {("kafka_topic_partition_current_offset",
                             (("partition", str(i)), ("topic", "t"))) for i in (0, 1)}
    g0 = (("consumergroup", "g"), ("partition", "0"), ("topic", "t"))
    assert out[("kafka_consumergroup_lag", g0)] == 6  # high watermark 10, committed 4
    assert out[("kafka_consumergroup_current_offset", g0)] == 4
    # a partition this broker does not host: its offset, but no lag series here
    other = (("consumergroup", "g"), ("partition", "0"), ("topic", "other"))
    assert ("kafka_consumergroup_lag", other) not in out
    assert out[("kafka_consumergroup_current_offset", other)] == 4
    assert out[("kafka_consumergroup_lag_sum", (("consumergroup", "g"), ("topic", "t")))] == 6
    assert out[("kafka_consumergroup_members", (("consumergroup", "g"),))] == 1
    assert out[("kafka_brokers", ())] == 2
    assert out[("kafka_broker_info", (("address", "h:9092"), ("id", "1")))] == 1
    assert out[("kafka_topic_partitions", (("topic", "t"),))] == 3
    b = _fake_broker()
    b.controller.active = False
    assert ("kafka_brokers", ()) not in _exposed(ClusterCollector(_on(b)))


# --- the endpoint -----------------------------------------------------------------------------

async def _request(port: int, data: bytes, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 10) if read else b""
    writer.close()
    return out


def _run_endpoint(test, ready=lambda: None):
    async def main():
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ClusterCollector(_on(_fake_broker())))
        ep = MetricsEndpoint("127.0.0.1", 0, registry, ready)
        await ep.start()
        try:
            return await test(ep)
        finally:
            await ep.close()

    return asyncio.run(main())


def test_endpoint_answers_paths_methods_and_formats():
    async def test(ep):
        get = lambda path, extra=b"": _request(  # noqa: E731
            ep.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n")
        metrics = await get(b"/metrics")
        assert metrics.startswith(b"HTTP/1.1 200 ") and b"kafka_brokers 2.0" in metrics
        assert b"text/plain; version=0.0.4" in metrics
        om = await get(b"/metrics", b"Accept: application/openmetrics-text; version=1.0.0\r\n")
        assert b"application/openmetrics-text" in om and om.rstrip().endswith(b"# EOF")
        assert (await get(b"/healthz")).startswith(b"HTTP/1.1 200 ")
        assert (await get(b"/readyz")).startswith(b"HTTP/1.1 200 ")
        assert (await get(b"/nope")).startswith(b"HTTP/1.1 404 ")
        post = await _request(ep.port, b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        assert post.startswith(b"HTTP/1.1 405 ")
        head = await _request(ep.port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")

    _run_endpoint(test)


def test_readyz_says_why_not():
    async def test(ep):
        r = await _request(ep.port, b"GET /readyz HTTP/1.0\r\n\r\n")
        assert r.startswith(b"HTTP/1.1 503 ") and b"starting" in r

    _run_endpoint(test, ready=lambda: "starting")


def test_garbage_huge_and_slow_requests_are_dropped(monkeypatch):
    monkeypatch.setattr(endpoint_module, "HEAD_TIMEOUT_S", 0.3)

    async def test(ep):
        assert (await _request(ep.port, b"\x00\xff garbage\r\n\r\n")).startswith(
            b"HTTP/1.1 400 ")
        huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100_000 + b"\r\n\r\n"
        assert (await _request(ep.port, huge)).startswith(b"HTTP/1.1 400 ")
        # a slowloris: a head that never ends is cut at HEAD_TIMEOUT_S
        loop = asyncio.get_running_loop()
        began = loop.time()
        slow = await _request(ep.port, b"GET /metrics HTTP/1.1\r\nX: 1\r\n")
        assert slow.startswith(b"HTTP/1.1 400 ") and loop.time() - began < 8
        # more connections than MAX_CLIENTS: the extra ones are closed, the endpoint lives
        held = [await asyncio.open_connection("127.0.0.1", ep.port)
                for _ in range(endpoint_module.MAX_CLIENTS + 4)]
        await asyncio.sleep(0.1)
        assert len(ep.clients) <= endpoint_module.MAX_CLIENTS
        for _, w in held:
            w.close()
        await asyncio.sleep(0.5)  # the held ones time out
        ok = await _request(ep.port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 ")

    _run_endpoint(test)


def test_port_in_use_is_a_clear_start_up_error():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]

    async def main():
        ep = MetricsEndpoint("127.0.0.1", port, CollectorRegistry(), lambda: None)
        with pytest.raises(SystemExit, match="metrics.listener"):
            await ep.start()

    try:
        asyncio.run(main())
    finally:
        holder.close()


def test_readiness_follows_start_up_replicas_and_shutdown():
    from strom.server.monitoring import Monitoring

    follower = SimpleNamespace(is_leader=False, isr=(2, 3), __str__=lambda self: "t-0")
    broker = SimpleNamespace(stopping=asyncio.Event(), started=False, broker_id=1,
                             replicas=SimpleNamespace(partitions={("t", 0): follower}))
    m = Monitoring(broker, "127.0.0.1", 0, True)
    assert m.not_ready() == "starting"
    broker.started = True
    assert "1 replicas not in their ISR" in m.not_ready()
    follower.isr = (2, 3, 1)
    assert m.not_ready() is None
    broker.stopping.set()
    assert m.not_ready() == "shutting down"


def test_end_offsets_of_a_silent_leader_are_bounded_and_kept(monkeypatch):
    """A leader that accepts the connection but never answers costs a scrape at most
    TIMEOUT_S, and the end offsets known before stay."""
    from strom.server import end_offsets

    monkeypatch.setattr(end_offsets, "TIMEOUT_S", 0.3)

    async def main():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # silent
        port = server.sockets[0].getsockname()[1]
        endpoint = SimpleNamespace(host="127.0.0.1", port=port)
        cache = SimpleNamespace(partition=lambda t, p: SimpleNamespace(leader=2),
                                endpoint=lambda b, listener: endpoint)
        remote = end_offsets.RemoteEndOffsets(1, cache, "PLAINTEXT")
        remote.ends = {("t", 0): 42, ("gone", 0): 7}
        loop = asyncio.get_running_loop()
        began = loop.time()
        await remote.refresh({("t", 0)})
        took = loop.time() - began
        await remote.close()
        server.close()
        return remote.ends, took

    ends, took = asyncio.run(main())
    assert ends == {("t", 0): 42}  # kept; partitions no longer wanted are forgotten
    assert took < 5


def test_consumer_protocol_assignment_decodes_and_garbage_gives_nothing():
    import struct

    from strom.metrics.snapshot import _decode_assignment
    data = struct.pack(">hi", 1, 1) + struct.pack(">h", 3) + b"abc" + struct.pack(">iii", 2, 0, 4)
    data += struct.pack(">i", -1)  # user data: null
    assert _decode_assignment(data) == [("abc", 0), ("abc", 4)]
    assert _decode_assignment(data[:9]) == []
    assert _decode_assignment(b"") == []
    assert _decode_assignment(struct.pack(">hi", 0, 1) + struct.pack(">h", 2) + b"\xff\xfe"
                              + struct.pack(">i", 0)) == []


def test_offline_log_dir_and_its_replicas_are_counted(tmp_path):
    """KIP-112: a dir that failed while running counts as offline, and so do its logs."""
    b = _fake_broker()
    good, failed = str(tmp_path / "good"), str(tmp_path / "failed")
    (tmp_path / "good").mkdir()
    (tmp_path / "failed").mkdir()
    b.logs = SimpleNamespace(log_dirs=[good, failed], offline_dirs={failed}, logs={
        ("t", 0): SimpleNamespace(offline=True), ("t", 1): SimpleNamespace(offline=False)})
    out = _exposed(BrokerCollector(_on(b)))
    assert out[("kafka_log_logmanager_offlinelogdirectorycount", ())] == 1
    assert out[("kafka_server_replicamanager_offlinereplicacount", ())] == 1
