"""A real broker's background tasks are supervised (strom/tasks.py): a failing periodic
job is logged with its traceback, the broker keeps serving, and the job runs again once
the cause is gone."""

from __future__ import annotations

import pytest

from strom.testing.cluster import wait_until
from strom.testing.kafka import create_topic

pytestmark = pytest.mark.timeout(90)


def test_failing_checkpoint_job_is_logged_and_retried(start_broker, topic_name):
    b = start_broker({"log.flush.offset.checkpoint.interval.ms": "100"})
    checkpoint = b.log_dir / "recovery-point-offset-checkpoint"
    blocker = b.log_dir / "recovery-point-offset-checkpoint.tmp"
    blocker.mkdir()  # the atomic write of the checkpoint fails: its temp file is a directory
    create_topic(b.bootstrap, topic_name, 1)
    wait_until(lambda: "IsADirectoryError" in b.log_text(), 30, what="the failure logged")
    text = b.log_text()
    assert "Periodic checkpoint failed" in text and "Traceback" in text, text[-3000:]
    blocker.rmdir()
    wait_until(lambda: checkpoint.is_file() and topic_name in checkpoint.read_text(), 60,
               what="the checkpoint written again")
    assert b.is_alive()
