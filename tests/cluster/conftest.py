"""Fixtures for cluster tests.

- `zookeeper`: one real standalone ZooKeeper (Debian's package) for the whole test session;
  tests keep apart by using their own chroot. Skipped when ZooKeeper is not installed.
- `make_cluster(size=3, overrides=..., session_timeout_ms=..., metrics=False)`: a started `Cluster` of real
  broker processes on that ZooKeeper (a fresh chroot each), closed at teardown; when the
  test fails, every broker's log is attached to the report.
"""

from __future__ import annotations

import pytest

from strom.testing.cluster import Cluster
from strom.testing.zookeeper import ZooKeeperProcess, find_zookeeper


@pytest.fixture(scope="session")
def zookeeper():
    if find_zookeeper() is None:
        pytest.skip("ZooKeeper is not installed (needs java and /usr/share/java/zookeeper.jar:"
                    " apt-get install zookeeper)")
    with ZooKeeperProcess() as zk:
        yield zk


@pytest.fixture
def make_cluster(request, zookeeper):
    clusters: list[Cluster] = []

    def make(size: int = 3, overrides: dict | None = None, session_timeout_ms: int = 4000,
             start: bool = True, metrics: bool = False) -> Cluster:
        settings = {"replica.fetch.backoff.ms": 200}
        settings.update(overrides or {})
        cluster = Cluster(zookeeper.connect_string, size, settings,
                          session_timeout_ms=session_timeout_ms, metrics=metrics)
        clusters.append(cluster)
        # tests/conftest.py attaches the logs of these brokers to a failed test's report
        node = request.node
        if not hasattr(node, "_strom_brokers"):
            node._strom_brokers = []
        node._strom_brokers.extend(cluster.brokers.values())
        if start:
            cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()
