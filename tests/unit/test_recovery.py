"""Recovery after a crash: torn tails, CRC mismatches, missing and corrupt indexes
(strom.log.partition_log / segment), and the LogManager's start-up and shutdown files."""

from __future__ import annotations

import os
import re
import struct
import uuid

import pytest

from strom.clock import ManualClock
from strom.config import BrokerConfig, TopicConfig, validate_topic_configs
from strom.log import checkpoint
from strom.log.manager import LogDirError, LogManager
from strom.log.partition_log import PartitionLog
from strom.log.records import NewRecord, build_batch, decode_batch
from strom.protocol.batch import read_header
from strom.protocol.errors import KafkaStorageError

NOW = 1_700_000_000_000
TOPIC_ID = uuid.UUID("5f0c9a8e-2c1b-4d7e-9a3b-1f2e3d4c5b6a")


def topic_config(**overrides: object) -> TopicConfig:
    raw = {k.replace("_", "."): str(v) for k, v in overrides.items()}
    return TopicConfig(BrokerConfig({}), validate_topic_configs(raw))


def append(plog: PartitionLog, values, timestamps=None):
    ts = timestamps or [NOW] * len(values)
    data = bytearray(build_batch([NewRecord(v, key=b"k", timestamp=t)
                                  for v, t in zip(values, ts, strict=True)]))
    return plog.append_as_leader(data, read_header(data), 0)


def records(plog: PartitionLog) -> list[tuple[int, bytes]]:
    """(offset, value) of every record, read batch by batch through the indexes."""
    out = []
    offset = plog.log_start_offset
    while offset < plog.log_end_offset:
        data = plog.read(offset, 1 << 20, plog.log_end_offset, min_one=True).slice.read()
        pos = 0
        while pos < len(data):
            batch = decode_batch(data, pos)
            out += [(r.offset, r.value) for r in batch.records]
            pos += batch.header.size
            offset = batch.header.last_offset + 1
    return out


def reopen(path: str, needs_recovery: bool, **overrides) -> PartitionLog:
    return PartitionLog.open(path, "t", 0, topic_config(**overrides), ManualClock(NOW),
                             needs_recovery=needs_recovery)


@pytest.fixture
def written(tmp_path):
    """A closed log: batches of 2 records at 0-1, 2-3 | 4-5, 6-7 | 8-9 (segment.bytes 200,
    index.interval.bytes 0), and the list of what it holds."""
    cfg = dict(segment_bytes=200, index_interval_bytes=0)
    plog = PartitionLog.open(str(tmp_path / "t-0"), "t", 0, topic_config(**cfg),
                             ManualClock(NOW))
    for i in range(5):
        append(plog, [b"v%d" % (2 * i), b"v%d" % (2 * i + 1)], [NOW + 2 * i, NOW + 2 * i + 1])
    assert [s.base_offset for s in plog.segments] == [0, 4, 8]
    expected = records(plog)
    assert [o for o, _ in expected] == list(range(10))
    plog.close()
    return plog.dir, cfg, expected


def seg_file(dir_: str, base: int, suffix: str) -> str:
    return os.path.join(dir_, f"{base:020d}{suffix}")


def file_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def index_files(dir_: str) -> dict[str, bytes]:
    return {n: file_bytes(os.path.join(dir_, n)) for n in sorted(os.listdir(dir_))
            if n.endswith((".index", ".timeindex"))}


def assert_rebuilt(dir_: str, before: dict[str, bytes], active_rebuilt: bool = True) -> None:
    """The index files equal those written on append, except that rebuilding the active
    segment (base 8) also gives it its final time index entry, as Kafka's recovery does."""
    after = index_files(dir_)
    active = f"{8:020d}.timeindex"
    assert before[active] == b""
    if active_rebuilt:
        assert after.pop(active) == struct.pack(">qi", NOW + 9, 1)
        del before[active]
    assert after == before


@pytest.mark.parametrize("tail", [
    pytest.param(b"\x00" * 30, id="zeros"),
    pytest.param(os.urandom(7) + b"garbage" * 20, id="garbage"),
    pytest.param(build_batch([NewRecord(b"torn")], base_offset=10)[:50], id="torn-header"),
    pytest.param(build_batch([NewRecord(b"torn" * 20)], base_offset=10)[:100],
                 id="torn-records"),
])
def test_torn_tail_is_truncated(written, tail):
    dir_, cfg, expected = written
    log_path = seg_file(dir_, 8, ".log")
    good = file_bytes(log_path)
    with open(log_path, "ab") as f:
        f.write(tail)
    plog = reopen(dir_, needs_recovery=True, **cfg)
    assert file_bytes(log_path) == good
    assert plog.log_end_offset == 10
    assert records(plog) == expected
    r = append(plog, [b"after"])
    assert r.base_offset == 10
    plog.close()


def test_crc_mismatch_truncates_from_that_batch(written):
    dir_, cfg, expected = written
    log_path = seg_file(dir_, 4, ".log")  # a closed segment: 4-5, 6-7
    data = bytearray(file_bytes(log_path))
    first = read_header(data)
    data[first.size + 65] ^= 0x01  # inside the records of batch 6-7
    with open(log_path, "wb") as f:
        f.write(data)
    plog = reopen(dir_, needs_recovery=True, **cfg)
    assert plog.log_end_offset == 6
    assert records(plog) == expected[:6]
    # the corrupt batch and every later segment are gone
    assert file_bytes(log_path) == bytes(data[:first.size])
    assert not os.path.exists(seg_file(dir_, 8, ".log"))
    assert not os.path.exists(seg_file(dir_, 8, ".index"))
    assert append(plog, [b"x"]).base_offset == 6
    plog.close()


def test_crc_mismatch_below_the_recovery_point_is_not_scanned(written):
    dir_, cfg, expected = written
    log_path = seg_file(dir_, 0, ".log")
    data = bytearray(file_bytes(log_path))
    data[70] ^= 0x01
    with open(log_path, "wb") as f:
        f.write(data)
    plog = PartitionLog.open(dir_, "t", 0, topic_config(**cfg), ManualClock(NOW),
                             recovery_point=8, needs_recovery=True)
    assert plog.log_end_offset == 10  # only segments from the recovery point are scanned
    plog.close()


@pytest.mark.parametrize("needs_recovery", [True, False])
@pytest.mark.parametrize("which", [(".index", ".timeindex"), (".index",), (".timeindex",)])
def test_missing_indexes_are_rebuilt(written, needs_recovery, which):
    dir_, cfg, expected = written
    before = index_files(dir_)
    for name in os.listdir(dir_):
        if name.endswith(which):
            os.unlink(os.path.join(dir_, name))
    plog = reopen(dir_, needs_recovery=needs_recovery, **cfg)
    assert records(plog) == expected
    assert plog.log_end_offset == 10
    for seg in plog.segments:
        assert seg.max_timestamp == NOW + seg.next_offset - 1
    assert plog.offset_for_timestamp(NOW + 3, 10) == (3, NOW + 3)
    plog.close()
    assert_rebuilt(dir_, before)


def test_missing_time_index_with_unordered_timestamps(tmp_path):
    """A segment's max timestamp is not always in its last batch: losing the time index must
    not lose it (ListOffsets by timestamp would skip the segment)."""
    plog = PartitionLog.open(str(tmp_path / "t-0"), "t", 0,
                             topic_config(segment_bytes=200, index_interval_bytes=0),
                             ManualClock(NOW))
    for ts in (NOW + 500, NOW + 100, NOW + 600):
        append(plog, [b"x"], [ts])
    assert [s.base_offset for s in plog.segments] == [0, 2]
    plog.close()
    os.unlink(seg_file(plog.dir, 0, ".timeindex"))
    again = reopen(plog.dir, needs_recovery=False, segment_bytes=200, index_interval_bytes=0)
    assert again.segments[0].max_timestamp == NOW + 500
    assert again.offset_for_timestamp(NOW + 400, 3) == (0, NOW + 500)
    again.close()


def test_corrupt_index_is_rebuilt_without_recovery(written):
    dir_, cfg, expected = written
    before = index_files(dir_)
    with open(seg_file(dir_, 0, ".index"), "wb") as f:
        f.write(struct.pack(">ii", 3, 80) + struct.pack(">ii", 1, 160))  # not increasing
    with open(seg_file(dir_, 4, ".index"), "wb") as f:
        f.write(b"\x01\x02\x03")  # not a whole entry
    plog = reopen(dir_, needs_recovery=False, **cfg)
    assert records(plog) == expected
    plog.close()
    assert_rebuilt(dir_, before, active_rebuilt=False)


def test_index_pointing_beyond_the_log_is_rebuilt(written):
    dir_, cfg, expected = written
    before = index_files(dir_)
    with open(seg_file(dir_, 8, ".index"), "wb") as f:
        f.write(struct.pack(">ii", 1, 10_000))
    plog = reopen(dir_, needs_recovery=False, **cfg)
    assert records(plog) == expected
    plog.close()
    assert_rebuilt(dir_, before)


# Found by the fuzzer (tests/fuzz, strom.testing.fuzz.recovery_target): baseOffset is
# outside the CRC, so a flipped bit there passes the CRC check.
def test_batch_offset_beyond_the_index_range_is_truncated_not_raised(written):
    dir_, cfg, expected = written
    log_path = seg_file(dir_, 8, ".log")
    data = bytearray(file_bytes(log_path))
    struct.pack_into(">q", data, 0, 8 + (1 << 31))  # relative offset 2^31: no index entry
    with open(log_path, "wb") as f:
        f.write(data)
    plog = reopen(dir_, needs_recovery=True, **cfg)  # raised struct.error before
    assert records(plog) == expected[:8]
    assert plog.log_end_offset == 8
    plog.close()


def test_batch_offsets_into_the_next_segment_are_truncated(written):
    dir_, cfg, expected = written
    log_path = seg_file(dir_, 0, ".log")
    data = bytearray(file_bytes(log_path))
    second = read_header(data).size
    struct.pack_into(">q", data, second, 4)  # batch 2-3 claims 4-5: the next segment's
    with open(log_path, "wb") as f:
        f.write(data)
    plog = PartitionLog.open(dir_, "t", 0, topic_config(**cfg), ManualClock(NOW),
                             recovery_point=0, needs_recovery=True)
    assert records(plog) == expected[:2]  # and the segments after it go, as after any cut
    assert plog.log_end_offset == 2
    plog.close()


@pytest.mark.parametrize("which", [".index", ".timeindex"])
def test_index_entry_outside_the_segment_is_rebuilt_without_recovery(written, which):
    dir_, cfg, expected = written
    before = index_files(dir_)
    path = seg_file(dir_, 0, which)
    data = bytearray(file_bytes(path))
    if which == ".index":  # the last entry names offset 1 << 24 (its batch ends at 3)
        struct.pack_into(">i", data, len(data) - 8, 1 << 24)
    else:  # the first entry names offset -2^24
        struct.pack_into(">i", data, 8, -(1 << 24))
    with open(path, "wb") as f:
        f.write(data)
    plog = reopen(dir_, needs_recovery=False, **cfg)
    assert records(plog) == expected
    plog.close()
    assert_rebuilt(dir_, before, active_rebuilt=False)


def test_stale_files_are_cleaned_on_open(written):
    dir_, cfg, expected = written
    for name in ("00000000000000000099.index", "00000000000000000099.timeindex",
                 "00000000000000000004.log.deleted", "00000000000000000004.log.cleaned",
                 "00000000000000000004.log.swap", "leader-epoch-checkpoint.tmp"):
        with open(os.path.join(dir_, name), "wb") as f:
            f.write(b"junk")
    plog = reopen(dir_, needs_recovery=False, **cfg)
    names = os.listdir(dir_)
    assert not [n for n in names if "99" in n or n.endswith((".deleted", ".cleaned",
                                                              ".swap", ".tmp"))]
    assert records(plog) == expected
    plog.close()


# --- LogManager ---------------------------------------------------------------------------


def config_for(_topic: str) -> TopicConfig:
    return topic_config(segment_bytes=200, index_interval_bytes=0)


def topic_id_for(topic: str) -> uuid.UUID | None:
    return TOPIC_ID if topic == "t" else None


def read_text(path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_log_manager_first_start_writes_meta_properties(tmp_path):
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    lm = LogManager(dirs, ManualClock(NOW), node_id=7)
    lm.startup(config_for, topic_id_for)
    assert lm.logs == {}
    assert lm.recovered_partitions == 0
    metas = [checkpoint.read_properties_file(os.path.join(d, "meta.properties")) for d in dirs]
    assert metas[0]["node.id"] == "7" and metas[0]["version"] == "1"
    assert metas[0]["cluster.id"] == metas[1]["cluster.id"] == lm.cluster_id
    assert len(lm.cluster_id) == 22
    assert metas[0]["directory.id"] != metas[1]["directory.id"]
    lm.shutdown()
    # another node id may not take these directories
    with pytest.raises(LogDirError):
        LogManager(dirs, ManualClock(NOW), node_id=8).startup(config_for, topic_id_for)
    with pytest.raises(LogDirError):
        LogManager(dirs, ManualClock(NOW), node_id=7, cluster_id="other").startup(
            config_for, topic_id_for)


def test_log_manager_clean_shutdown_and_crash_recovery(tmp_path):
    d = tmp_path / "data"
    lm = LogManager([str(d)], ManualClock(NOW), node_id=1)
    lm.startup(config_for, topic_id_for)
    p0 = lm.get_or_create("t", 0, config_for("t"), TOPIC_ID)
    p1 = lm.get_or_create("t", 1, config_for("t"), TOPIC_ID)
    assert lm.get_or_create("t", 0, config_for("t"), TOPIC_ID) is p0
    for i in range(3):
        append(p0, [b"a%d" % i, b"b%d" % i])
    append(p1, [b"only"])
    p0.high_watermark = 4
    p1.high_watermark = 1
    lm.shutdown()

    assert read_text(d / "recovery-point-offset-checkpoint") == "0\n2\nt 0 6\nt 1 1\n"
    assert read_text(d / "log-start-offset-checkpoint") == "0\n2\nt 0 0\nt 1 0\n"
    assert read_text(d / "replication-offset-checkpoint") == "0\n2\nt 0 4\nt 1 1\n"
    assert (d / ".kafka_cleanshutdown").exists()
    meta = read_text(d / "t-0" / "partition.metadata")
    assert meta == f"version: 0\ntopic_id: {checkpoint.topic_id_to_str(TOPIC_ID)}\n"

    # a clean start: nothing is recovered, the marker goes while the broker runs
    lm2 = LogManager([str(d)], ManualClock(NOW), node_id=1)
    lm2.startup(config_for, topic_id_for)
    assert lm2.had_clean_shutdown is True
    assert lm2.recovered_partitions == 0
    assert not (d / ".kafka_cleanshutdown").exists()
    q0 = lm2.get("t", 0)
    assert (q0.log_end_offset, q0.high_watermark) == (6, 4)
    assert lm2.get("t", 1).high_watermark == 1
    assert [v for _, v in records(q0)] == [b"a0", b"b0", b"a1", b"b1", b"a2", b"b2"]
    append(q0, [b"a3", b"b3"])  # 6-7
    # crash: no shutdown(); the last batch is half written
    last = q0.active_segment.log_path
    for plog in lm2.logs.values():
        plog.close()
    lm2.release_locks()  # the crashed process's lock goes with it
    with open(last, "ab") as f:
        f.write(build_batch([NewRecord(b"lost" * 10)], base_offset=8)[:70])

    lm3 = LogManager([str(d)], ManualClock(NOW), node_id=1)
    lm3.startup(config_for, topic_id_for)
    assert lm3.had_clean_shutdown is False
    assert lm3.recovered_partitions == 2
    r0 = lm3.get("t", 0)
    assert r0.log_end_offset == 8
    assert records(r0)[-2:] == [(6, b"a3"), (7, b"b3")]
    assert r0.high_watermark == 4  # from the checkpoint written at the last shutdown
    lm3.shutdown()


def test_log_manager_removes_partitions_of_unknown_topics(tmp_path):
    d = tmp_path / "data"
    lm = LogManager([str(d)], ManualClock(NOW), node_id=1)
    lm.startup(config_for, topic_id_for)
    append(lm.get_or_create("gone", 0, config_for("gone"), uuid.uuid4()), [b"x"])
    append(lm.get_or_create("t", 0, config_for("t"), TOPIC_ID), [b"x"])
    lm.shutdown()
    (d / "old-topic-0-delete").mkdir()
    lm2 = LogManager([str(d)], ManualClock(NOW), node_id=1)
    lm2.startup(config_for, topic_id_for)
    assert set(lm2.logs) == {("t", 0)}
    assert not (d / "gone-0").exists()
    assert not (d / "old-topic-0-delete").exists()
    lm2.shutdown()


def test_log_manager_retention_deletes_after_the_delay(tmp_path):
    clock = ManualClock(NOW)
    d = tmp_path / "data"
    lm = LogManager([str(d)], clock, node_id=1)
    lm.startup(config_for, topic_id_for)
    cfg = topic_config(segment_bytes=100, retention_ms=1000, file_delete_delay_ms=60_000)
    plog = lm.get_or_create("t", 0, cfg, TOPIC_ID)
    for ts in (NOW, NOW, NOW + 100_000):  # the active segment's batch is not expired
        append(plog, [b"x" * 20], [ts])
    plog.high_watermark = plog.log_end_offset
    clock.advance(5000)
    assert lm.run_retention() == 2
    deleted = [n for n in os.listdir(plog.dir) if n.endswith(".deleted")]
    assert len(deleted) == 6  # .log, .index, .timeindex of two segments, removed later
    clock.advance(59_000)
    assert lm.run_retention() == 0
    assert len([n for n in os.listdir(plog.dir) if n.endswith(".deleted")]) == 6
    clock.advance(1_000)  # file.delete.delay.ms has passed
    lm.run_retention()
    assert not [n for n in os.listdir(plog.dir) if n.endswith(".deleted")]
    assert sorted(os.listdir(plog.dir)) == [
        "00000000000000000002.index", "00000000000000000002.log",
        "00000000000000000002.timeindex", "leader-epoch-checkpoint", "partition.metadata"]
    lm.shutdown()
    assert read_text(d / "log-start-offset-checkpoint") == "0\n1\nt 0 2\n"


@pytest.mark.parametrize(("broker", "override", "removed_after"), [
    ({"log.segment.delete.delay.ms": "2000"}, {}, 2000),
    ({"log.segment.delete.delay.ms": "2000"}, {"file.delete.delay.ms": "7000"}, 7000),
    ({}, {}, 60_000),
])
def test_log_segment_delete_delay_ms_is_the_default_of_file_delete_delay_ms(
        tmp_path, broker, override, removed_after):
    """As in Kafka, the broker's log.segment.delete.delay.ms is what a topic without its own
    file.delete.delay.ms waits before retired segment files are removed."""
    clock = ManualClock(NOW)
    lm = LogManager([str(tmp_path / "data")], clock, node_id=1)
    lm.startup(config_for, topic_id_for)
    cfg = TopicConfig.of(BrokerConfig(broker), {"segment.bytes": "100", "retention.ms": "1000",
                                                **override})
    plog = lm.get_or_create("t", 0, cfg, TOPIC_ID)
    for ts in (NOW, NOW, NOW + 100_000):
        append(plog, [b"x" * 20], [ts])
    plog.high_watermark = plog.log_end_offset
    clock.advance(5000)
    assert lm.run_retention() == 2

    def deleted_files() -> int:
        return len([n for n in os.listdir(plog.dir) if n.endswith(".deleted")])

    assert deleted_files() == 6
    clock.advance(removed_after - 500)
    lm.run_retention()
    assert deleted_files() == 6
    clock.advance(500)
    lm.run_retention()
    assert deleted_files() == 0
    lm.shutdown()


def test_log_manager_shutdown_removes_retired_segments_at_once(tmp_path):
    clock = ManualClock(NOW)
    lm = LogManager([str(tmp_path / "data")], clock, node_id=1)
    lm.startup(config_for, topic_id_for)
    cfg = topic_config(segment_bytes=100, retention_ms=1000)
    plog = lm.get_or_create("t", 0, cfg, TOPIC_ID)
    for ts in (NOW, NOW, NOW + 100_000):  # the active segment's batch is not expired
        append(plog, [b"x" * 20], [ts])
    plog.high_watermark = plog.log_end_offset
    clock.advance(5000)
    assert lm.run_retention() == 2
    lm.shutdown()
    assert not [n for n in os.listdir(plog.dir) if n.endswith(".deleted")]


def test_log_manager_malformed_checkpoints_mean_full_recovery(tmp_path):
    d = tmp_path / "data"
    lm = LogManager([str(d)], ManualClock(NOW), node_id=1)
    lm.startup(config_for, topic_id_for)
    plog = lm.get_or_create("t", 0, config_for("t"), TOPIC_ID)
    for i in range(4):
        append(plog, [b"%d" % i])
    plog.high_watermark = 4
    lm.shutdown()
    (d / ".kafka_cleanshutdown").unlink()
    (d / "recovery-point-offset-checkpoint").write_text("0\n5\nt 0 4\n")  # wrong count
    (d / "replication-offset-checkpoint").write_text("garbage")
    lm2 = LogManager([str(d)], ManualClock(NOW), node_id=1)
    lm2.startup(config_for, topic_id_for)
    assert lm2.recovered_partitions == 1
    again = lm2.get("t", 0)
    assert (again.log_end_offset, again.high_watermark) == (4, 0)
    assert [v for _, v in records(again)] == [b"0", b"1", b"2", b"3"]
    lm2.shutdown()


def test_a_failed_append_leaves_no_partial_batch_behind(tmp_path, monkeypatch):
    """A write that fails part-way (ENOSPC after some bytes) left those bytes at the end of
    the segment (opened O_APPEND): the next batch landed after them while its index entry
    and position said otherwise, so reads returned garbage and recovery cut the log there,
    losing every batch appended after the failure."""
    plog = PartitionLog.open(str(tmp_path / "t-0"), "t", 0,
                             topic_config(index_interval_bytes=0), ManualClock(NOW))
    append(plog, [b"a"])
    real_write = os.write

    def short_then_full_disk(fd, data):
        monkeypatch.setattr(os, "write", real_write)
        real_write(fd, bytes(data[:10]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_full_disk)
    with pytest.raises(KafkaStorageError):  # what the producer is answered
        append(plog, [b"lost"])
    append(plog, [b"b"])
    assert records(plog) == [(0, b"a"), (1, b"b")]
    plog.close()
    again = reopen(plog.dir, needs_recovery=True)
    assert records(again) == [(0, b"a"), (1, b"b")]
    again.close()


def test_a_failed_append_takes_its_log_dir_offline(tmp_path, monkeypatch):
    """KIP-112: an append that fails in a log dir takes that dir offline until a restart:
    its partitions refuse appends (KAFKA_STORAGE_ERROR) even once the disk works again, new
    partitions go to the other dirs, and when no dir is left the broker is told to stop.
    Nothing is written to an offline dir at shutdown, so the next start recovers it."""
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    manager = LogManager(dirs, ManualClock(NOW), node_id=1, cluster_id="c")
    manager.startup(lambda t: topic_config(), lambda t: uuid.UUID(int=1))
    stopped = []
    manager.on_all_dirs_offline = lambda: stopped.append(True)
    first = manager.get_or_create("t", 0, topic_config(), None)
    second = manager.get_or_create("t", 1, topic_config(), None)
    assert manager.dir_of("t", 0) == dirs[0] and manager.dir_of("t", 1) == dirs[1]
    append(first, [b"a"])
    real_write = os.write

    def full_disk(fd, data):
        monkeypatch.setattr(os, "write", real_write)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(KafkaStorageError):
        append(first, [b"lost"])
    assert manager.offline_dirs == {dirs[0]} and first.offline and not stopped
    with pytest.raises(KafkaStorageError):  # offline until a restart
        append(first, [b"later"])
    append(second, [b"b"])
    assert manager.get_or_create("u", 0, topic_config(), None) is not None
    assert manager.dir_of("u", 0) == dirs[1]

    manager.mark_dir_offline(dirs[1], OSError(5, "Input/output error"))
    assert stopped == [True]
    with pytest.raises(KafkaStorageError):
        manager.get_or_create("v", 0, topic_config(), None)
    manager.shutdown()
    assert not os.path.exists(os.path.join(dirs[0], ".kafka_cleanshutdown"))
    assert not os.path.exists(os.path.join(dirs[1], ".kafka_cleanshutdown"))


def test_recovery_logs_its_progress(written, caplog):
    """After a crash every unflushed segment is logged with a count and a percentage (as
    Kafka's "Recovering unflushed segment"), and the LogManager counts the logs it loaded."""
    dir_, cfg, expected = written
    with caplog.at_level("INFO", logger="strom.log"):
        plog = reopen(dir_, needs_recovery=True, **cfg)  # recovery point 0: all 3 segments
    assert records(plog) == expected
    plog.close()
    lines = [r.getMessage() for r in caplog.records if "Recovering unflushed" in r.getMessage()]
    assert lines == [f"Recovering unflushed segment {base} of t-0 ({n}/3, {pct}%)"
                     for base, n, pct in ((0, 1, 0), (4, 2, 33), (8, 3, 66))]


def test_log_manager_logs_recovered_logs_with_a_count(tmp_path, caplog):
    d = tmp_path / "data"
    lm = LogManager([str(d)], ManualClock(NOW), node_id=1)
    lm.startup(config_for, topic_id_for)
    for p in range(2):
        append(lm.get_or_create("t", p, config_for("t"), TOPIC_ID), [b"x"])
    for plog in lm.logs.values():  # a crash: no shutdown, no clean-shutdown marker
        plog.close()
    lm.release_locks()
    lm2 = LogManager([str(d)], ManualClock(NOW), node_id=1)
    with caplog.at_level("INFO", logger="strom.log"):
        lm2.startup(config_for, topic_id_for)
    lm2.shutdown()
    counts = re.findall(r"; (\d)/2 logs \((\d+)%\) loaded in ", caplog.text)
    assert counts == [("1", "50"), ("2", "100")]
