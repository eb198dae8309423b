"""Fixtures for cluster tests.

- `zookeeper`: one real standalone ZooKeeper (Debian's package) for the whole test session;
  tests keep apart by using their own chroot. Skipped when ZooKeeper is not installed.
"""

from __future__ import annotations

import pytest

from strom.testing.zookeeper import ZooKeeperProcess, find_zookeeper


@pytest.fixture(scope="session")
def zookeeper():
    if find_zookeeper() is None:
        pytest.skip("ZooKeeper is not installed (needs java and /usr/share/java/zookeeper.jar:"
                    " apt-get install zookeeper)")
    with ZooKeeperProcess() as zk:
        yield zk
