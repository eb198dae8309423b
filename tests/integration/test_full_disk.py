"""A full log dir answers producers KAFKA_STORAGE_ERROR and the broker goes on serving.

The broker's log dir is a small tmpfs of the test's own (strom.testing.nemesis.SmallDisk;
skipped where this machine does not let us mount). A filler file takes the last free byte;
appends then fail with ENOSPC, which must reach the producer as KAFKA_STORAGE_ERROR (not a
closed connection), leave what was written before readable, and stop once the space is
back.
"""

from __future__ import annotations

import pytest

from strom.testing.cluster import read_partitions
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
    from confluent_kafka import Producer

    # no retries: the first answer is the one the client sees
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0,
                  "enable.idempotence": False, "message.timeout.ms": 20000, "linger.ms": 0})
    acked, failed = [], []

    def on_delivery(err, msg):
        (failed if err else acked).append(err.name() if err else (msg.offset(), msg.value()))

    for v in values:
        p.produce(topic, value=v, partition=0, on_delivery=on_delivery)
        p.flush(30)
    assert p.flush(30) == 0
    return acked, failed


def test_full_disk_answers_storage_error_and_recovers(small_disk, start_broker, topic_name):
    broker = start_broker(log_dir=small_disk.path / "data")
    before, failed = produce(broker.bootstrap, topic_name, [b"before-%d" % i for i in range(20)])
    assert not failed and len(before) == 20

    small_disk.fill()
    _, failed = produce(broker.bootstrap, topic_name, [b"x" * 20000 for _ in range(5)])
    assert failed and set(failed) == {"KAFKA_STORAGE_ERROR"}, failed
    assert broker.is_alive()
    assert "No space left on device" in broker.log_text()

    small_disk.free()
    after, failed = produce(broker.bootstrap, topic_name, [b"after-%d" % i for i in range(20)])
    assert not failed and len(after) == 20
    records = read_partitions(broker.bootstrap, topic_name, {0: after[-1][0] + 1})[0]
    assert [(o, v) for o, _, v in records] == before + after
    assert broker.is_alive()
