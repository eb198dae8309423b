"""Fixtures for the chaos suite.

- `ensemble`: a three-member ZooKeeper ensemble (Debian's package) for the whole session;
  clusters keep apart by their own chroot. Skipped when ZooKeeper is not installed.
- `make_chaos(size=3, overrides=...)`: a started `ChaosCluster` on it (each broker behind
  its own ZooKeeper proxies, on a small tmpfs log dir when mounting is allowed), closed at
  teardown; when the test fails, every broker's log is attached to the report.

`STROM_CHAOS_SEEDS` (comma-separated seeds) and `STROM_CHAOS_FAULTS` (faults per schedule)
run other schedules than the fixed ones; bench/chaos.py runs random ones for minutes.
"""

from __future__ import annotations

import pytest

from strom.testing.nemesis import ChaosCluster
from strom.testing.zookeeper import ZooKeeperEnsemble, find_zookeeper


@pytest.fixture(scope="session")
def ensemble():
    if find_zookeeper() is None:
        pytest.skip("ZooKeeper is not installed (needs java and /usr/share/java/zookeeper.jar:"
                    " apt-get install zookeeper)")
    with ZooKeeperEnsemble(3) as zk:
        yield zk


@pytest.fixture
def make_chaos(request, ensemble):
    made: list[ChaosCluster] = []

    def make(size: int = 3, overrides: dict | None = None, session_timeout_ms: int = 4000
             ) -> ChaosCluster:
        settings = {"replica.fetch.backoff.ms": 200, "replica.lag.time.max.ms": 4000}
        settings.update(overrides or {})
        chaos = ChaosCluster(ensemble, size, settings, session_timeout_ms=session_timeout_ms)
        made.append(chaos)
        node = request.node
        if not hasattr(node, "_strom_brokers"):
            node._strom_brokers = []
        node._strom_brokers.extend(chaos.cluster.brokers.values())
        return chaos.start()

    yield make
    for chaos in made:
        chaos.close()
