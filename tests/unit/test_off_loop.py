"""Blocking work stays off the event loop, and what runs off it never reads the loop's
state: checkpoint files are written from a snapshot taken on the loop; fsync and unlink
calls made on the loop's thread are recorded and must be none. No sockets."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from strom.clock import ManualClock
from strom.config import BrokerConfig
from strom.log import checkpoint
from strom.log.manager import LogManager
from strom.server.broker import Broker
from tests.unit.test_recovery import NOW, TOPIC_ID, append, config_for, topic_id_for


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def manager(tmp_path):
    lm = LogManager([str(tmp_path / "a"), str(tmp_path / "b")], ManualClock(NOW), node_id=1)
    lm.startup(config_for, topic_id_for)
    for p in range(4):
        append(lm.get_or_create("t", p, config_for("t"), TOPIC_ID), [b"x"])
    yield lm
    lm.shutdown()


def test_checkpoints_are_written_from_a_snapshot_taken_on_the_loop(manager, monkeypatch):
    """Before: the executor iterated LogManager.logs while the loop changed it (here: a
    partition created between two files, as get_or_create does) and the write failed
    (KeyError / dictionary changed size), or wrote files that disagree."""
    broker = Broker(BrokerConfig({"log.dirs": ",".join(manager.log_dirs)}))
    broker.logs = manager
    write_offsets = checkpoint.write_offsets
    loop_thread = threading.current_thread()
    created = []

    def write_while_the_loop_creates_a_partition(path, offsets):
        assert threading.current_thread() is not loop_thread
        if not created:  # the loop runs on meanwhile: a partition is being created
            created.append(("t", 9))
            manager.logs[("t", 9)] = manager.logs[("t", 0)]  # _dir_of not set yet
        write_offsets(path, offsets)

    monkeypatch.setattr(checkpoint, "write_offsets", write_while_the_loop_creates_a_partition)
    run(broker._checkpoint())
    del manager.logs[("t", 9)]
    written = {}
    for d in manager.log_dirs:
        written.update(checkpoint.read_offsets(os.path.join(d, "recovery-point-offset-checkpoint")))
    assert sorted(written) == [("t", p) for p in range(4)]  # as of the snapshot
