"""A full log dir (KIP-112): producers get KAFKA_STORAGE_ERROR, the dir goes offline, the
broker goes on with its other dirs, and stops once it has none left.

The full dir is a small tmpfs of the test's own (strom.testing.nemesis.SmallDisk; skipped
where this machine does not let us mount): a filler file takes its last free byte, so
appends fail with ENOSPC. Nothing acknowledged before is lost: after the space is back and
the broker restarted, every record reads back.
"""

from __future__ import annotations

import pytest

from strom.testing.cluster import read_partitions, wait_until
from strom.testing.nemesis import SmallDisk

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def small_disk():
    if not SmallDisk.available():
        pytest.skip("mounting a tmpfs is not allowed here")
    disk = SmallDisk(16 << 20)
    yield disk
    disk.close()


def produce(bootstrap: str, topic: str, values: list[bytes]) -> tuple[list, list]:
    """Send each value alone (flushed before the next) with no retries, so each outcome is
    the broker's first answer: ([(offset, value)] acknowledged, [error name] failed)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0,
                  "enable.idempotence": False, "message.timeout.ms": 10000,
                  "linger.ms": 0, "log_level": 2})
    acked, failed = [], []

    def on_delivery(err, msg):
        (failed if err else acked).append(err.name() if err else (msg.offset(), msg.value()))

    for v in values:
        p.produce(topic, value=v, partition=0, on_delivery=on_delivery)
        p.flush(30)
    assert p.flush(30) == 0
    return acked, failed


def read_all(bootstrap: str, topic: str, end: int) -> list[tuple[int, bytes]]:
    return [(o, v) for o, _, v in read_partitions(bootstrap, topic, {0: end})[0]]


def test_full_only_dir_stops_the_broker_and_loses_nothing(small_disk, start_broker,
                                                          topic_name):
    broker = start_broker(log_dir=small_disk.path / "data")
    before, failed = produce(broker.bootstrap, topic_name, [b"before-%d" % i for i in range(20)])
    assert not failed and len(before) == 20

    small_disk.fill()
    _, failed = produce(broker.bootstrap, topic_name, [b"x" * 20000])
    assert failed == ["KAFKA_STORAGE_ERROR"]
    wait_until(lambda: not broker.is_alive(), 60, what="the broker to stop")
    assert broker.returncode != 0
    text = broker.log_text()
    assert "No space left on device" in text and "all log dirs" in text

    small_disk.free()
    broker.start()
    after, failed = produce(broker.bootstrap, topic_name, [b"after-%d" % i for i in range(20)])
    assert not failed and len(after) == 20
    assert read_all(broker.bootstrap, topic_name, after[-1][0] + 1) == before + after


def test_full_dir_goes_offline_and_the_others_serve(small_disk, start_broker, topic_names,
                                                   tmp_path):
    healthy = tmp_path / "healthy"
    # a partition goes to the dir holding the fewest, ties to the first: the small one
    broker = start_broker({"log.dirs": f"{small_disk.path / 'data'},{healthy}"})
    on_small, on_healthy = topic_names.new(), topic_names.new()
    before, failed = produce(broker.bootstrap, on_small, [b"small-%d" % i for i in range(10)])
    assert not failed
    assert (small_disk.path / "data" / f"{on_small}-0").is_dir()
    ok, failed = produce(broker.bootstrap, on_healthy, [b"healthy-%d" % i for i in range(10)])
    assert not failed and (healthy / f"{on_healthy}-0").is_dir()

    small_disk.fill()
    _, failed = produce(broker.bootstrap, on_small, [b"x" * 20000])
    assert failed == ["KAFKA_STORAGE_ERROR"]
    small_disk.free()
    # offline until a restart, even with space back; the other dir goes on, and takes
    # every new partition
    _, failed = produce(broker.bootstrap, on_small, [b"y"])
    assert failed == ["KAFKA_STORAGE_ERROR"]
    more, failed = produce(broker.bootstrap, on_healthy, [b"more-%d" % i for i in range(10)])
    assert not failed
    newer = topic_names.new()
    _, failed = produce(broker.bootstrap, newer, [b"new"])
    assert not failed and (healthy / f"{newer}-0").is_dir()
    assert broker.is_alive()
    assert read_all(broker.bootstrap, on_healthy, more[-1][0] + 1) == ok + more

    broker.restart()
    again, failed = produce(broker.bootstrap, on_small, [b"again"])
    assert not failed
    assert read_all(broker.bootstrap, on_small, again[-1][0] + 1) == before + again


def test_a_failed_checkpoint_write_takes_the_dir_offline(small_disk, start_broker,
                                                        topic_names, tmp_path):
    """The first write a full dir refuses is a periodic checkpoint, not an append: the
    dir goes offline all the same (Kafka's LogDirFailureChannel), before any producer
    meets the full disk, and its records are all there after a restart."""
    small, healthy = small_disk.path / "data", tmp_path / "healthy"
    broker = start_broker({"log.dirs": f"{small},{healthy}",
                           "log.flush.offset.checkpoint.interval.ms": "300"})
    on_small, on_healthy = topic_names.new(), topic_names.new()
    before, failed = produce(broker.bootstrap, on_small, [b"small-%d" % i for i in range(10)])
    assert not failed and (small / f"{on_small}-0").is_dir()
    ok, failed = produce(broker.bootstrap, on_healthy, [b"healthy"])
    assert not failed and (healthy / f"{on_healthy}-0").is_dir()

    small_disk.fill()  # nothing is appended from here: only the checkpoints write
    wait_until(lambda: f"Log directory {small} is offline" in broker.log_text(), 30,
               what="the small dir to go offline")
    assert "Writing the checkpoint files in" in broker.log_text()
    small_disk.free()
    _, failed = produce(broker.bootstrap, on_small, [b"refused"])
    assert failed == ["KAFKA_STORAGE_ERROR"]  # offline until a restart
    more, failed = produce(broker.bootstrap, on_healthy, [b"more"])
    assert not failed and broker.is_alive()

    broker.restart()
    again, failed = produce(broker.bootstrap, on_small, [b"again"])
    assert not failed
    assert read_all(broker.bootstrap, on_small, again[-1][0] + 1) == before + again
    assert read_all(broker.bootstrap, on_healthy, more[-1][0] + 1) == ok + more
