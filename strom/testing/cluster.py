"""Several real strom brokers sharing one ZooKeeper, for tests/cluster and bench/.

    with Cluster(zookeeper.connect_string, size=3) as cluster:
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        cluster.kill(cluster.leader_of("t", 0))
        ...

Each cluster gets its own ZooKeeper chroot (a fresh `/strom-<random>`), so many clusters
can share one ZooKeeper server. Brokers are `BrokerProcess`es (node ids 1..size, free
ports, temp log dirs); `overrides` apply to all of them. Cluster state is read the way a
client sees it: Metadata through confluent-kafka's AdminClient.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from strom.testing.broker import BrokerProcess

__all__ = ["Cluster", "wait_until"]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1,
               what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - a cluster in flux answers with errors
            last_error = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout:.0f} s"
                               + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)


class Cluster:
    def __init__(self, zk_connect: str, size: int = 3, overrides: dict | None = None,
                 session_timeout_ms: int = 6000) -> None:
        self.chroot = f"/strom-{uuid.uuid4().hex[:10]}"
        self.zk_connect = zk_connect + self.chroot
        settings = {
            "zookeeper.connect": self.zk_connect,
            "zookeeper.session.timeout.ms": session_timeout_ms,
            "offsets.topic.num.partitions": 3,
            "group.initial.rebalance.delay.ms": 0,
        }
        settings.update(overrides or {})
        self.overrides = settings
        self.brokers: dict[int, BrokerProcess] = {}
        for node_id in range(1, size + 1):
            self.add_broker(node_id, start=False)

    def add_broker(self, node_id: int, start: bool = True) -> BrokerProcess:
        b = BrokerProcess(overrides=self.overrides, node_id=node_id, startup_timeout=30.0,
                          stop_timeout=30.0)
        self.brokers[node_id] = b
        if start:
            b.start()
        return b

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        for b in self.brokers.values():
            b.start()
        self.wait_for_brokers(set(self.brokers))

    def close(self) -> None:
        for b in self.brokers.values():
            b.close()

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values())

    def live_bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values() if b.is_alive())

    # --- faults -----------------------------------------------------------------------------
    def kill(self, node_id: int) -> None:
        self.brokers[node_id].kill()

    def stop(self, node_id: int) -> None:
        self.brokers[node_id].stop()

    def restart(self, node_id: int, crash: bool = False) -> None:
        self.brokers[node_id].restart(crash=crash)

    # --- what clients see ---------------------------------------------------------------------
    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.live_bootstrap(),
                            "socket.timeout.ms": 5000})

    def metadata(self, topic: str | None = None):
        return self.admin().list_topics(topic=topic, timeout=10)

    def registered_brokers(self) -> set[int]:
        return set(self.metadata().brokers)

    def wait_for_brokers(self, ids: set[int], timeout: float = 30) -> None:
        wait_until(lambda: self.registered_brokers() == ids, timeout,
                   what=f"brokers {sorted(ids)} registered")

    def controller_id(self) -> int:
        return self.metadata().controller_id

    def partition(self, topic: str, partition: int):
        md = self.metadata(topic)
        return md.topics[topic].partitions[partition]

    def leader_of(self, topic: str, partition: int) -> int:
        return self.partition(topic, partition).leader

    def isr_of(self, topic: str, partition: int) -> list[int]:
        return list(self.partition(topic, partition).isrs)

    def wait_for_isr(self, topic: str, partition: int, isr: set[int], timeout: float = 30
                     ) -> None:
        wait_until(lambda: set(self.isr_of(topic, partition)) == isr, timeout,
                   what=f"ISR of {topic}-{partition} == {sorted(isr)}")

    def wait_for_leader(self, topic: str, partition: int, timeout: float = 30,
                        not_on: int | None = None) -> int:
        def ok():
            leader = self.leader_of(topic, partition)
            return leader if leader >= 0 and leader != not_on and \
                self.brokers[leader].is_alive() else None
        return wait_until(ok, timeout, what=f"a leader for {topic}-{partition}")

    def create_topic(self, name: str, partitions: int, replication_factor: int,
                     config: dict | None = None) -> None:
        from confluent_kafka.admin import NewTopic

        admin = self.admin()  # kept alive until the result is in
        fs = admin.create_topics([NewTopic(name, partitions, replication_factor,
                                           config=config or {})])
        fs[name].result(timeout=30)
        for p in range(partitions):
            self.wait_for_isr(name, p, set(self.partition(name, p).replicas))
