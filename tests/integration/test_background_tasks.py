"""A real broker's background tasks are supervised (strom/tasks.py); a failed write of a
checkpoint file is not retried but takes its log dir offline (KIP-112)."""

from __future__ import annotations

import pytest

from strom.testing.cluster import read_partitions, wait_until
from strom.testing.kafka import create_topic
from tests.integration.test_full_disk import produce

pytestmark = pytest.mark.timeout(90)


def make_dir(path) -> bool:
    try:
        path.mkdir()
        return True
    except FileExistsError:
        return False


def test_failing_checkpoint_write_takes_the_log_dir_offline(start_broker, topic_name):
    """A checkpoint write the file system refuses is not a job failure to retry: as in
    Kafka (LogDirFailureChannel, KIP-112) its log dir goes offline, and a broker with no
    dir left stops with a non-zero status; it starts again on the same data once the
    cause is gone. (Periodic jobs that fail otherwise are logged and retried: see
    tests/unit/test_tasks.py.)"""
    b = start_broker({"log.flush.offset.checkpoint.interval.ms": "100"})
    create_topic(b.bootstrap, topic_name, 1)
    acked, failed = produce(b.bootstrap, topic_name, [b"kept-%d" % i for i in range(5)])
    assert not failed
    blocker = b.log_dir / "recovery-point-offset-checkpoint.tmp"
    # the atomic write of the checkpoint fails: its temp file is a directory (made when no
    # write's temp file is there)
    wait_until(lambda: make_dir(blocker), 10, what="the blocking directory made")
    wait_until(lambda: not b.is_alive(), 30, what="the broker to stop")
    assert b.returncode != 0
    text = b.log_text()
    assert "Writing the checkpoint files in" in text  # not a job failure to retry:
    assert "Periodic checkpoint failed" not in text
    assert f"Log directory {b.log_dir} is offline" in text and "all log dirs" in text
    blocker.rmdir()
    b.start()
    assert read_partitions(b.bootstrap, topic_name, {0: acked[-1][0] + 1})[0] == \
        [(o, None, v) for o, v in acked]
