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
from tests.unit.test_tasks import until


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


@pytest.fixture
def file_calls(monkeypatch):
    """Threads that called os.unlink / os.rmdir / os.fsync, by call."""
    calls: list[tuple[str, threading.Thread]] = []
    for name in ("unlink", "rmdir", "fsync"):
        real = getattr(os, name)

        def record(*args, _real=real, _name=name, **kwargs):
            calls.append((_name, threading.current_thread()))
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, record)
    return calls


def _on_loop(calls, loop_thread) -> list[str]:
    return [name for name, thread in calls if thread is loop_thread]


def test_retention_unlinks_off_the_loop(tmp_path, file_calls):
    """Before: segments past file.delete.delay.ms were unlinked on the loop."""
    clock = ManualClock(NOW)
    lm = LogManager([str(tmp_path / "d")], clock, node_id=1)
    lm.startup(config_for, topic_id_for)
    from tests.unit.test_recovery import topic_config

    plog = lm.get_or_create("t", 0, topic_config(segment_bytes=100, retention_ms=1000,
                                                  file_delete_delay_ms=0), TOPIC_ID)
    for ts in (NOW, NOW, NOW + 10_000):  # the active segment's batch is not expired
        append(plog, [b"x" * 20], [ts])
    plog.high_watermark = plog.log_end_offset
    clock.advance(5000)

    async def main():
        file_calls.clear()
        assert lm.run_retention() == 2
        await until(lambda: not getattr(lm, "background", None))
        return threading.current_thread()

    loop_thread = run(main())
    assert not [n for n in os.listdir(plog.dir) if n.endswith(".deleted")]
    assert ("unlink", loop_thread) not in file_calls and file_calls  # unlinked, elsewhere
    lm.shutdown()


def test_topic_deletion_renames_on_the_loop_and_removes_off_it(manager, file_calls):
    """Before: deleting a partition unlinked every file and the directory on the loop."""
    path = manager.get("t", 1).dir

    async def main():
        file_calls.clear()
        manager.delete("t", 1)
        assert not os.path.exists(path)  # renamed at once: the name is free again
        await until(lambda: not getattr(manager, "background", None))
        return threading.current_thread()

    loop_thread = run(main())
    assert _on_loop(file_calls, loop_thread) == []
    assert {name for name, _ in file_calls} >= {"unlink", "rmdir"}
    parent = os.path.dirname(path)
    assert not [n for n in os.listdir(parent) if n.endswith("-delete")]


def test_local_metadata_store_writes_off_the_loop_and_durably(tmp_path, file_calls,
                                                               monkeypatch):
    """Before: every change rewrote and fsynced the whole JSON file on the loop."""
    from strom.cluster import local_store
    from strom.cluster.local_store import LocalMetadataStore

    writes = []
    real_write = local_store.write_atomically

    def counting_write(path, text):
        writes.append(text)
        real_write(path, text)

    monkeypatch.setattr(local_store, "write_atomically", counting_write)

    async def main():
        store = LocalMetadataStore(str(tmp_path))
        await store.start()
        file_calls.clear()
        await store.create("/brokers/topics/a", b"1")
        # durable when the call returns: a new store reads it from the file
        again = LocalMetadataStore(str(tmp_path))
        await again.start()
        assert await again.get("/brokers/topics/a") == (b"1", 0)
        # concurrent changes share writes, and each caller returns once its change is on
        # disk
        writes.clear()
        await asyncio.gather(*(store.create(f"/brokers/topics/t{i}", b"x")
                               for i in range(50)))
        assert 1 <= len(writes) < 50
        await store.set("/brokers/topics/t0", b"y", version=0)
        await store.delete("/brokers/topics/t1")
        await store.close()
        again = LocalMetadataStore(str(tmp_path))
        await again.start()
        assert await again.get("/brokers/topics/t0") == (b"y", 1)
        assert not await again.exists("/brokers/topics/t1")
        assert await again.exists("/brokers/topics/t49")
        return threading.current_thread()

    loop_thread = run(main())
    assert file_calls and _on_loop(file_calls, loop_thread) == []


def test_leader_epoch_checkpoint_is_written_off_the_loop(tmp_path, file_calls):
    """Before: the first append of a new leader epoch fsynced the checkpoint in the
    append path, on the loop."""
    from tests.unit.test_partition_log import append as append_at
    from tests.unit.test_partition_log import open_log

    plog = open_log(tmp_path)
    path = os.path.join(plog.dir, "leader-epoch-checkpoint")

    async def main():
        file_calls.clear()
        append_at(plog, epoch=0)
        append_at(plog, epoch=3)  # offset 1
        plog.assign_epoch_start(5, plog.log_end_offset)  # a new leadership: offset 2
        await until(lambda: not getattr(plog, "_epoch_writes", None))
        return threading.current_thread()

    loop_thread = run(main())
    assert _on_loop(file_calls, loop_thread) == []
    with open(path) as f:
        assert f.read() == "0\n3\n0 0\n3 1\n5 2\n"
    plog.close()


def test_leader_epochs_after_the_recovery_point_are_rebuilt_from_batch_headers(tmp_path):
    """The checkpoint may miss entries whose write had not happened at a crash: recovery
    takes them from the batches it scans (Kafka's LogSegment.recover does the same)."""
    from strom.log.partition_log import PartitionLog
    from tests.unit.test_partition_log import ManualClock as Clock
    from tests.unit.test_partition_log import append as append_at
    from tests.unit.test_partition_log import open_log, topic_config

    plog = open_log(tmp_path)
    for epoch in (0, 0, 3, 3, 5):
        append_at(plog, epoch=epoch)
    plog.flush_to_os()
    path = os.path.join(plog.dir, "leader-epoch-checkpoint")
    checkpoint.write_leader_epochs(path, [(0, 0), (7, 1)])  # stale: a later entry lost
    plog.close()
    again = PartitionLog.open(plog.dir, "t", 0, topic_config(), Clock(NOW),
                              recovery_point=1, needs_recovery=True)
    assert again.leader_epochs == [(0, 0), (3, 2), (5, 4)]
    assert checkpoint.read_leader_epochs(path) == [(0, 0), (3, 2), (5, 4)]
    again.close()


def test_local_metadata_store_change_made_during_a_failed_write_is_answered(tmp_path,
                                                                           monkeypatch):
    """A change made while a write runs waits for the next write; before, when the running
    write failed, the writer stopped and that change's caller waited forever."""
    from strom.cluster import local_store
    from strom.cluster.local_store import LocalMetadataStore

    started, release = threading.Event(), threading.Event()

    def failing_write(path, nodes, ephemeral):
        started.set()
        release.wait(10)
        raise OSError(28, "No space left on device")

    async def main():
        store = LocalMetadataStore(str(tmp_path))
        await store.start()
        monkeypatch.setattr(local_store, "_write_tree", failing_write)
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(store.create("/a", b"1"))
        assert await loop.run_in_executor(None, started.wait, 10)
        second = asyncio.create_task(store.create("/b", b"2"))
        await until(lambda: len(store._waiters) == 2)
        release.set()
        with pytest.raises(OSError, match="No space"):
            await first
        # the next write (which fails too) answers it
        with pytest.raises(OSError, match="No space"):
            await asyncio.wait_for(second, 5)

    run(main())


def test_an_older_checkpoint_snapshot_written_late_does_not_replace_a_newer_one(manager):
    """A periodic checkpoint write still running in the executor when shutdown writes the
    final checkpoints (its task is cancelled, its thread is not): before, the older
    snapshot could land last, putting back the log start offset DeleteRecords had moved."""
    plog = manager.logs[("t", 0)]
    old = manager.checkpoint_snapshot()
    plog.high_watermark = plog.log_end_offset
    assert plog.maybe_increment_log_start_offset(1)
    manager.write_checkpoints()  # shutdown's write
    LogManager.write_checkpoint_snapshot(old)  # the periodic one, finishing late
    d = manager.dir_of("t", 0)
    starts = checkpoint.read_offsets(os.path.join(d, "log-start-offset-checkpoint"))
    assert starts[("t", 0)] == 1
