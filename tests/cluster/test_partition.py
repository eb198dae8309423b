"""A network partition: the leader alone in its own network namespace, cut off and healed.

Needs root and `ip netns` (skipped cleanly elsewhere). Brokers 1 and 2 run as usual but
listen on the root side of a veth pair (10.231.x.1); broker 3 runs inside a network
namespace of its own (`ip netns exec`) on the other side (10.231.x.2) and reaches
ZooKeeper through a proxy on 10.231.x.1. Taking the namespace's end of the veth down
isolates broker 3 completely: its packets are dropped (no resets), as in a real partition.

Broker 3 leads the partition (RF=3, min.insync.replicas=2) when it is cut off. Then:
- a client inside the namespace cannot get an acks=all produce acknowledged by it (the
  followers are gone and it cannot change the ISR in ZooKeeper), while acks=1 appends land
  in its log only;
- outside, once its ZooKeeper session has expired, the controller elects a new leader
  from the rest of the ISR, and acks=all producing continues there;
- after healing, broker 3 registers again, follows the new leader, truncates the records
  only it had, and rejoins the ISR: nothing acknowledged with acks=all is lost and the
  three replicas are byte-identical up to the high watermark.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from strom.testing import wire
from strom.testing.broker import BrokerProcess, BrokerStartError, free_port
from strom.testing.cluster import read_partitions, wait_until
from strom.testing.zookeeper import TcpProxy

pytestmark = pytest.mark.timeout(150)

TOPIC = "partitioned"
NOT_LEADER_OR_FOLLOWER = 6
REPO_ROOT = Path(__file__).resolve().parents[2]


def _ip(*args: str, netns: str | None = None, check: bool = True):
    cmd = ["ip", "netns", "exec", netns, "ip", *args] if netns else ["ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=check)


class Namespace:
    """A network namespace joined to the root namespace by a veth pair (a /30)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"strom-{tag}"
        self.outer_if, self.inner_if = f"sv{tag}a", f"sv{tag}b"
        net = random.randrange(0, 256), random.randrange(0, 64) * 4
        self.outer = f"10.231.{net[0]}.{net[1] + 1}"
        self.inner = f"10.231.{net[0]}.{net[1] + 2}"

    def create(self) -> None:
        _ip("netns", "add", self.name)
        _ip("link", "add", self.outer_if, "type", "veth", "peer", "name", self.inner_if)
        _ip("link", "set", self.inner_if, "netns", self.name)
        _ip("addr", "add", f"{self.outer}/30", "dev", self.outer_if)
        _ip("link", "set", self.outer_if, "up")
        _ip("addr", "add", f"{self.inner}/30", "dev", self.inner_if, netns=self.name)
        _ip("link", "set", self.inner_if, "up", netns=self.name)
        _ip("link", "set", "lo", "up", netns=self.name)

    def cut(self) -> None:
        _ip("link", "set", self.inner_if, "down", netns=self.name)

    def heal(self) -> None:
        _ip("link", "set", self.inner_if, "up", netns=self.name)

    def delete(self) -> None:
        _ip("link", "del", self.outer_if, check=False)
        _ip("netns", "del", self.name, check=False)


@pytest.fixture
def netns():
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (ip netns)")
    ns = Namespace()
    try:
        ns.create()
    except (subprocess.CalledProcessError, OSError) as e:
        ns.delete()
        pytest.skip(f"cannot create a network namespace here: "
                    f"{getattr(e, 'stderr', '') or e}")
    try:
        yield ns
    finally:
        ns.delete()


class NetBroker(BrokerProcess):
    """A broker listening on `host` (and running in network namespace `netns`)."""

    def __init__(self, host: str, netns: str | None = None, **kwargs) -> None:
        self.host = host
        self.netns = netns
        super().__init__(**kwargs)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = super().command()
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                self._reap()
                raise BrokerStartError(f"broker exited with code {self._proc.returncode}; "
                                       f"log:\n{self.log_text(current_run_only=True)}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                self.kill()
                raise BrokerStartError(f"broker did not listen on {self.bootstrap}; log:\n"
                                       f"{self.log_text(current_run_only=True)}")
            time.sleep(0.05)


class ProxyOn(TcpProxy):
    """TcpProxy listening on `host` instead of 127.0.0.1."""

    def __init__(self, host: str, target_port: int) -> None:
        super().__init__(target_port)
        self.host = host

    def start(self) -> ProxyOn:
        import threading

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self


# run inside the namespace: one raw produce to the isolated broker; prints the error code
_INNER_CLIENT = textwrap.dedent("""
    import sys
    from strom.testing import wire
    host, port, acks, value = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    with wire.KafkaSocket(host, port, timeout=20) as sock:
        batch = wire.encode_record_batch([wire.Record(value.encode())])
        _, results = wire.parse_produce(sock.roundtrip(
            wire.produce(sys.argv[5], 0, batch, acks=acks, timeout_ms=3000)))
        print(results[0].error_code, results[0].base_offset)
""")


def produce_inside(ns: Namespace, broker: NetBroker, acks: int, value: str) -> tuple[int, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-c",
                          _INNER_CLIENT, broker.host, str(broker.port), str(acks), value,
                          TOPIC], capture_output=True, text=True, timeout=40, env=env,
                         check=True)
    code, offset = out.stdout.split()
    return int(code), int(offset)


def produce(bootstrap: str, values: list[bytes]) -> dict[bytes, int]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "message.timeout.ms": 60000})
    acked: dict[bytes, int] = {}
    errors = []
    for v in values:
        producer.produce(TOPIC, v, partition=0, on_delivery=lambda e, m: acked.__setitem__(
            m.value(), m.offset()) if e is None else errors.append(e))
    assert producer.flush(70) == 0
    assert not errors, errors[:3]
    return acked


def test_isolated_leader_is_replaced_and_rejoins_without_loss(request, netns, zookeeper,
                                                              make_cluster):
    cluster = make_cluster(0, {"replica.lag.time.max.ms": 3000,
                               "replica.socket.timeout.ms": 5000}, start=False)
    chroot = cluster.chroot
    with ProxyOn(netns.outer, zookeeper.port) as zk_proxy:
        settings = dict(cluster.overrides)
        for node_id in (1, 2):
            cluster.brokers[node_id] = NetBroker(
                netns.outer, node_id=node_id, overrides=settings, startup_timeout=30,
                stop_timeout=30)
        inner_settings = dict(settings, **{
            "zookeeper.connect": f"{netns.outer}:{zk_proxy.port}{chroot}"})
        cluster.brokers[3] = NetBroker(netns.inner, netns.name, node_id=3,
                                       overrides=inner_settings, port=free_port(),
                                       startup_timeout=30, stop_timeout=30)
        request.node._strom_brokers.extend(cluster.brokers.values())
        for b in cluster.brokers.values():  # broker 1 first: it is the controller
            b.start()
        cluster.wait_for_brokers({1, 2, 3})
        assert cluster.controller_id() != 3

        admin = cluster.admin()
        from confluent_kafka.admin import NewTopic
        admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=-1,
                                      replica_assignment=[[3, 1, 2]],
                                      config={"min.insync.replicas": "2"})]
                            )[TOPIC].result(timeout=30)
        cluster.wait_for_isr(TOPIC, 0, {1, 2, 3})
        assert cluster.wait_for_leader(TOPIC, 0) == 3

        acked = produce(cluster.bootstrap, [b"before-%d" % i for i in range(200)])
        assert sorted(acked.values()) == list(range(200))

        netns.cut()
        cluster.unreachable.add(3)
        try:
            # inside: the isolated leader cannot get acks=all acknowledged ...
            code, _ = produce_inside(netns, cluster.brokers[3], -1, "inside-all")
            assert code != 0, "an isolated leader acknowledged an acks=all produce"
            # ... but takes acks=1 appends, which only it has
            code, offset = produce_inside(netns, cluster.brokers[3], 1, "inside-one")
            assert code == 0 and offset >= 200

            # outside: a new leader once broker 3's ZooKeeper session has expired
            new_leader = wait_until(
                lambda: (leader := cluster.leader_of(TOPIC, 0)) in (1, 2) and leader, 30,
                what="a new leader outside the namespace")
            assert set(cluster.isr_of(TOPIC, 0)) == {1, 2}
            acked |= produce(cluster.live_bootstrap(),
                             [b"during-%d" % i for i in range(200)])
        finally:
            netns.heal()

        # broker 3 comes back as a follower, truncates, catches up. Until it has its new
        # ZooKeeper session its Metadata is the stale view from before the cut (itself as
        # leader), so clients keep asking brokers 1 and 2 until the ISR has it again.
        cluster.wait_for_brokers({1, 2, 3}, timeout=45)
        cluster.wait_for_isr(TOPIC, 0, {1, 2, 3}, timeout=45)
        assert cluster.leader_of(TOPIC, 0) == new_leader
        with wire.KafkaSocket(netns.inner, cluster.brokers[3].port) as sock:
            batch = wire.encode_record_batch([wire.Record(b"misrouted")])
            _, results = wire.parse_produce(sock.roundtrip(wire.produce(TOPIC, 0, batch)))
            assert results[0].error_code == NOT_LEADER_OR_FOLLOWER
        cluster.unreachable.discard(3)
        assert cluster.leader_of(TOPIC, 0) == new_leader
        acked |= produce(cluster.bootstrap, [b"after-%d" % i for i in range(100)])

        end = cluster.high_watermark(TOPIC, 0)
        records = read_partitions(cluster.bootstrap, TOPIC, {0: end})[0]
        at = {offset: value for offset, _, value in records}
        assert sorted(at) == list(range(end))
        for value, offset in acked.items():
            assert at[offset] == value, f"acknowledged {value!r} lost"
        assert b"inside-one" not in at.values()
        assert b"inside-all" not in at.values()
        wait_until(lambda: len({cluster.log_bytes(b, TOPIC, 0, end)
                                for b in cluster.brokers}) == 1, 30,
                   what="three identical replicas")
        assert cluster.log_bytes(3, TOPIC, 0, end)[1] == end
        assert "truncating" in cluster.brokers[3].log_text()
        cluster.close()  # before the proxy goes
