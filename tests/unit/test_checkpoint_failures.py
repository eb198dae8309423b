"""KIP-112 for the checkpoint files: a write of recovery-point-offset-checkpoint,
log-start-offset-checkpoint, replication-offset-checkpoint, leader-epoch-checkpoint or
cleaner-offset-checkpoint that the file system refuses (ENOSPC, EIO) takes its log dir
offline, as Kafka's LogDirFailureChannel does, instead of being logged and retried forever;
the other dirs go on, and the failed one gets no clean-shutdown marker, so the next start
recovers it. The failures are injected here; a real full disk is in
tests/integration/test_full_disk.py."""

from __future__ import annotations

import asyncio
import errno
import os
import uuid

import pytest

from strom.clock import ManualClock
from strom.config import BrokerConfig, TopicConfig, validate_topic_configs
from strom.log import checkpoint, files
from strom.log.cleaner_manager import CLEANER_OFFSET_CHECKPOINT, LogCleanerManager
from strom.log.manager import LogManager
from strom.log.records import NewRecord, build_batch
from strom.protocol.batch import read_header
from strom.protocol.errors import KafkaStorageError

NOW = 1_700_000_000_000


def topic_config(**raw: str) -> TopicConfig:
    return TopicConfig(BrokerConfig({}), validate_topic_configs(raw))


def append(plog, key: bytes, value: bytes, leader_epoch: int = 0) -> None:
    data = bytearray(build_batch([NewRecord(value, key=key, timestamp=NOW)]))
    plog.append_as_leader(data, read_header(data), leader_epoch)
    plog.high_watermark = plog.log_end_offset


@pytest.fixture
def manager(tmp_path):
    """Two dirs, `t-0` in the first and `t-1` in the second; the dirs reported offline
    are recorded in `manager.reported`."""
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    m = LogManager(dirs, ManualClock(NOW), node_id=1, cluster_id="c")
    m.prepare_dirs()
    m.startup(lambda t: topic_config(), lambda t: uuid.UUID(int=1))
    m.reported = []
    m.on_dir_offline = lambda d, tps: m.reported.append((d, sorted(tps)))
    for p in (0, 1):
        append(m.get_or_create("t", p, topic_config(), None), b"k", b"v")
    assert m.dir_of("t", 0) == dirs[0] and m.dir_of("t", 1) == dirs[1]
    yield m
    m.shutdown()


def fail_in(monkeypatch, d: str, error: int = errno.ENOSPC) -> None:
    """Every offset checkpoint written in `d` fails with `error`."""
    real = checkpoint.write_offsets

    def write_offsets(path, offsets):
        if os.path.dirname(path) == d:
            raise OSError(error, os.strerror(error))
        real(path, offsets)

    monkeypatch.setattr(checkpoint, "write_offsets", write_offsets)


def test_a_failed_offset_checkpoint_takes_its_dir_offline(manager, monkeypatch):
    a, b = manager.log_dirs
    fail_in(monkeypatch, a)
    manager.write_checkpoints()
    assert manager.offline_dirs == {a}
    assert manager.reported == [(a, [("t", 0)])]
    assert manager.get("t", 0).offline and not manager.get("t", 1).offline
    with pytest.raises(KafkaStorageError):
        append(manager.get("t", 0), b"k", b"refused")
    # the healthy dir's files were written all the same, and it takes new partitions
    assert checkpoint.read_offsets(os.path.join(b, files.REPLICATION_OFFSET_CHECKPOINT)) \
        == {("t", 1): 1}
    assert manager.dir_of("u", 0) is None
    manager.get_or_create("u", 0, topic_config(), None)
    assert manager.dir_of("u", 0) == b
    monkeypatch.undo()
    manager.shutdown()  # no marker where the checkpoint failed: the next start recovers
    assert not os.path.exists(os.path.join(a, files.CLEAN_SHUTDOWN_FILE))
    assert os.path.exists(os.path.join(b, files.CLEAN_SHUTDOWN_FILE))


def test_failed_checkpoints_in_every_dir_stop_the_broker(manager, monkeypatch):
    stopped = []
    manager.on_all_dirs_offline = lambda: stopped.append(True)
    fail_in(monkeypatch, manager.log_dirs[0], errno.EIO)
    manager.write_checkpoints()
    fail_in(monkeypatch, manager.log_dirs[1], errno.EIO)
    manager.write_checkpoints()
    assert manager.offline_dirs == set(manager.log_dirs) and stopped == [True]


def test_a_failed_leader_epoch_checkpoint_takes_its_dir_offline(manager, monkeypatch):
    """The leader-epoch-checkpoint is written off the loop; its failure reaches the dir."""
    plog = manager.get("t", 1)

    def refused():
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plog._epoch_file, "write_latest", refused)

    async def main():
        plog.assign_epoch_start(3, plog.log_end_offset)
        for _ in range(100):
            if manager.offline_dirs:
                return
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert manager.offline_dirs == {manager.log_dirs[1]}
    assert manager.reported == [(manager.log_dirs[1], [("t", 1)])]


def test_a_failed_cleaner_offset_checkpoint_takes_its_dir_offline(tmp_path, monkeypatch):
    d = str(tmp_path / "data")
    logs = LogManager([d], ManualClock(NOW), 1, "cluster")
    logs.prepare_dirs()
    logs.startup(lambda t: topic_config(), lambda t: uuid.UUID(int=1))
    stopped = []
    logs.on_all_dirs_offline = lambda: stopped.append(True)
    compacted = topic_config(**{"cleanup.policy": "compact",
                                "min.cleanable.dirty.ratio": "0.01"})
    plog = logs.get_or_create("c", 0, compacted, None)
    for v in (b"1", b"2", b"3"):
        append(plog, b"same", v)
        plog.roll()
    cleaner = LogCleanerManager(logs, BrokerConfig({}), logs.clock)
    real = checkpoint.write_offsets

    def write_offsets(path, offsets):
        if path.endswith(CLEANER_OFFSET_CHECKPOINT):
            raise OSError(errno.EIO, "Input/output error")
        real(path, offsets)

    monkeypatch.setattr(checkpoint, "write_offsets", write_offsets)
    cleaner.clean_once()
    assert logs.offline_dirs == {d} and plog.offline and stopped == [True]
    assert cleaner.grab_filthiest() is None  # an offline dir's logs are not cleaned
    monkeypatch.undo()
    logs.shutdown()
    assert not os.path.exists(os.path.join(d, files.CLEAN_SHUTDOWN_FILE))
