"""Rolling restart and rolling upgrade of a three-broker cluster under acks=all load.

- Rolling restart: each broker in turn gets SIGTERM (controlled shutdown: the controller
  moves its leaderships to other in-sync replicas before it leaves), is started again and
  waited for until it is back in every ISR; an idempotent acks=all producer and a
  committing group consumer run throughout. No delivery fails and the checker
  (strom.testing.chaos) finds nothing lost, duplicated, reordered or divergent.
- Rolling upgrade: the same cluster starts on an older commit of strom (`UPGRADE_FROM`,
  unpacked with `git archive` into a temp dir) and is upgraded broker by broker to this
  code, on the same log dirs: the new code reads the old one's segments, checkpoints and
  ZooKeeper state, and nothing is lost. Skipped when the commit is not in this repository
  (a shallow clone).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from strom.testing.chaos import GroupConsumer, check, settle
from strom.testing.cluster import BackgroundProducer

pytestmark = pytest.mark.timeout(300)

TOPIC = "rolling"
PARTITIONS = 3
REPO = Path(__file__).resolve().parents[2]
# a recorded older commit (2026-11-22): the "previous release" the upgrade starts from
UPGRADE_FROM = "e91701d"


def roll(cluster, producer: BackgroundProducer, upgrade: bool = False) -> None:
    """Restart every broker in turn (SIGTERM: controlled shutdown), each time waiting for
    the cluster to heal and the producer to make progress."""
    for node_id, broker in cluster.brokers.items():
        broker.stop()
        assert "Controlled shutdown: leadership moved away" in broker.log_text(
            current_run_only=True), f"broker {node_id} left before its leaderships moved"
        if upgrade:
            broker.argv_template = None  # this code from now on
        broker.start()
        settle(cluster, TOPIC, PARTITIONS)
        producer.wait_for_acks(200, timeout=60)


def run_roll(cluster, upgrade: bool = False) -> None:
    cluster.create_topic(TOPIC, PARTITIONS, 3, {"min.insync.replicas": "2"})
    producer = BackgroundProducer(cluster.bootstrap, TOPIC, PARTITIONS, records_per_tick=10)
    consumer = GroupConsumer(cluster.bootstrap, TOPIC).start()
    try:
        with producer:
            producer.wait_for_acks(300, timeout=60)
            roll(cluster, producer, upgrade)
    finally:
        consumer.stop()
    assert not producer.errors, f"{len(producer.errors)} deliveries failed: " \
        f"{producer.errors[:5]}"
    verdict = check(cluster, producer, faults=len(cluster.brokers), consumer=consumer)
    print(verdict.summary())
    assert verdict.ok, verdict.details()


def test_rolling_restart_under_load(make_cluster):
    run_roll(make_cluster(3, {"replica.lag.time.max.ms": 4000}))


@pytest.fixture
def old_release(tmp_path) -> Path:
    """The source tree of `UPGRADE_FROM`, from `git archive`."""
    archive = tmp_path / "old.tar"
    try:
        subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive),
                        UPGRADE_FROM, "strom"], check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"commit {UPGRADE_FROM} is not available here: {e}")
    old = tmp_path / "old"
    with tarfile.open(archive) as tar:
        tar.extractall(old, filter="data")
    return old


def test_rolling_upgrade_from_an_older_commit(make_cluster, old_release):
    cluster = make_cluster(3, {"replica.lag.time.max.ms": 4000}, start=False)
    # run the old tree's strom: its path goes before everything (PYTHONPATH points here)
    runner = (f"import sys, runpy; sys.path.insert(0, {str(old_release)!r}); "
              "runpy.run_module('strom', run_name='__main__', alter_sys=True)")
    for broker in cluster.brokers.values():
        cmd = broker.command()
        assert cmd[1:3] == ["-m", "strom"]
        broker.argv_template = [sys.executable, "-c", runner, *cmd[3:]]
    cluster.start()
    version = subprocess.run([sys.executable, "-c", runner.replace(
        "runpy.run_module('strom', run_name='__main__', alter_sys=True)",
        "import strom; print(strom.__file__)")], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith(str(old_release)), version
    run_roll(cluster, upgrade=True)
