"""strom.log.cleaner / cleaner_manager / swap: compaction of one log, with known key
histories, tombstones and the delete horizon, compaction lags, control batches and producer
state, bad input, failures, and a crash at every step of a swap."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import uuid

import pytest

from strom.clock import ManualClock
from strom.config import BrokerConfig, TopicConfig, validate_topic_configs
from strom.log import cleaner as cleaner_mod
from strom.log.cleaner_manager import CLEANER_OFFSET_CHECKPOINT, LogCleanerManager
from strom.log.manager import LogManager
from strom.log.records import (
    Compression,
    NewRecord,
    build_batch,
    decode_batch,
    end_txn_marker,
    iter_batches,
)
from strom.protocol.batch import read_header

NOW = 1_700_000_000_000
DAY = 24 * 3600 * 1000
TOPIC_ID = uuid.UUID(int=7)


class SimulatedCrash(BaseException):
    """Raised by the swap hook: nothing after it runs, as after kill -9."""


def topic_config(**overrides: object) -> TopicConfig:
    raw = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"}
    raw.update({k.replace("_", "."): str(v) for k, v in overrides.items()})
    return TopicConfig(BrokerConfig({}), validate_topic_configs(raw))


class Env:
    def __init__(self, tmp_path, clock: ManualClock | None = None, **overrides) -> None:
        self.root = str(tmp_path / "data")
        self.clock = clock or ManualClock(NOW)
        self.overrides = overrides
        self.open()

    def open(self) -> None:
        self.logs = LogManager([self.root], self.clock, 1, "cluster")
        self.logs.prepare_dirs()
        self.logs.startup(lambda t: topic_config(**self.overrides), lambda t: TOPIC_ID)
        self.plog = self.logs.get_or_create("t", 0, topic_config(**self.overrides), TOPIC_ID)
        self.plog.high_watermark = self.plog.log_end_offset  # all replicated (one replica)
        self.manager = LogCleanerManager(self.logs, BrokerConfig({}), self.clock)

    def crash(self) -> None:
        """Forget everything in memory, as a killed process does (no flush, no marker)."""
        for plog in self.logs.logs.values():
            for seg in plog.segments + plog.take_retired():
                os.close(seg.fd)
                seg.fd = -1
        self.logs.release_locks()

    def close(self) -> None:
        self.logs.shutdown()

    def append(self, *records: tuple[bytes | None, bytes | None], roll: bool = False,
               timestamp: int | None = None, compression=Compression.NONE, **kw) -> int:
        ts = self.clock.now_ms() if timestamp is None else timestamp
        data = bytearray(build_batch([NewRecord(v, key=k, timestamp=ts) for k, v in records],
                                     compression=compression, **kw))
        result = self.plog.append_as_leader(data, read_header(data), 0)
        self.plog.high_watermark = self.plog.log_end_offset
        if roll:
            self.plog.roll()
        return result.base_offset

    def batches(self):
        out = []
        for seg in self.plog.segments:
            data = seg.read_bytes(0, seg.size)
            out += [decode_batch(data, pos) for pos, _ in iter_batches(data)]
        return out

    def records(self) -> list[tuple[int, bytes | None, bytes | None]]:
        return [(r.offset, r.key, r.value) for b in self.batches() for r in b.records]


def latest_per_key(records):
    out = {}
    for offset, key, value in records:
        out[key] = (offset, value)
    return out


def test_textbook_history_keeps_the_latest_record_per_key_at_its_offset(tmp_path):
    env = Env(tmp_path)
    env.plog.truncate_fully_and_start_at(10)
    keys = [b"K1", b"K2", b"K1", b"K1", b"K3", b"K2", b"K4"]  # offsets 10..16
    for i, k in enumerate(keys):
        env.append((k, b"v%d" % (10 + i)), roll=i % 3 == 2)
    env.plog.roll()
    env.append((b"K1", b"active"))  # offset 17, in the active segment: never cleaned
    before_active = env.plog.active_segment
    result = env.manager.clean_once()
    assert result is not None and result.end_offset == 17
    assert env.records() == [(13, b"K1", b"v13"), (14, b"K3", b"v14"), (15, b"K2", b"v15"),
                             (16, b"K4", b"v16"), (17, b"K1", b"active")]
    assert env.plog.active_segment is before_active
    assert env.plog.log_start_offset == 10 and env.plog.log_end_offset == 18
    # the three small closed segments were merged into one
    assert [s.base_offset for s in env.plog.segments] == [10, 17]
    ckpt = open(os.path.join(env.root, CLEANER_OFFSET_CHECKPOINT)).read().split()
    assert ckpt == ["0", "1", "t", "0", "17"]
    assert env.manager.clean_once() is None  # nothing dirty left
    # reads and reopening see the same log
    env.close()
    env.open()
    assert env.records()[0] == (13, b"K1", b"v13")
    assert env.manager.checkpoint_of("t", 0) == 17


def test_batches_losing_some_records_keep_their_offsets_and_producer_fields(tmp_path):
    env = Env(tmp_path)
    env.append((b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"c", b"1"))
    env.append((b"x", b"1"), (b"a", b"3"), compression=Compression.GZIP)
    env.append((b"c", b"2"), (b"x", b"2"), roll=True)
    env.manager.clean_once()
    assert env.records() == [(1, b"b", b"1"), (5, b"a", b"3"), (6, b"c", b"2"),
                             (7, b"x", b"2")]
    first = env.batches()[0].header
    assert (first.base_offset, first.last_offset) == (0, 3)  # offsets keep their gaps
    assert env.batches()[1].header.compression == Compression.GZIP


@pytest.mark.parametrize("codec", [Compression.NONE, Compression.ZSTD])
def test_tombstones_stay_until_delete_retention_ms_after_the_clean(tmp_path, codec):
    env = Env(tmp_path, delete_retention_ms=DAY)
    env.append((b"a", b"1"), (b"b", b"1"), roll=True)
    env.append((b"a", None), (b"x", b"1"), (b"x", b"2"), roll=True, compression=codec)
    env.manager.clean_once()
    assert env.records() == [(1, b"b", b"1"), (2, b"a", None), (4, b"x", b"2")]
    tomb = env.batches()[1]
    assert tomb.header.has_delete_horizon and tomb.header.delete_horizon_ms == NOW + DAY
    assert tomb.header.compression == codec
    assert [r.timestamp for r in tomb.records] == [NOW, NOW]  # rebased on the horizon
    # a later clean before the horizon keeps it, and keeps the horizon
    env.clock.advance(DAY - 1)
    env.append((b"c", b"1"), roll=True)
    assert env.manager.clean_once() is not None
    assert (2, b"a", None) in env.records()
    assert env.batches()[1].header.delete_horizon_ms == NOW + DAY
    # after the horizon it goes
    env.clock.advance(1)
    env.append((b"d", b"1"), roll=True)
    assert env.manager.clean_once() is not None
    assert env.records() == [(1, b"b", b"1"), (4, b"x", b"2"), (5, b"c", b"1"),
                             (6, b"d", b"1")]


def test_the_throttler_sleeps_to_hold_the_rate():
    now = [0.0]
    waits: list[float] = []
    throttler = cleaner_mod.Throttler(1000.0, waits.append, lambda: now[0])
    throttler.maybe_throttle(500)
    assert waits == []  # too soon to tell
    now[0] = 0.5
    throttler.maybe_throttle(1500)  # 2000 bytes in 0.5 s: 1.5 s more are owed
    assert waits == [1.5]
    now[0] = 2.0
    throttler.maybe_throttle(100)  # 100 bytes in 1.5 s: under the rate
    assert waits == [1.5]


def test_min_compaction_lag_keeps_recent_segments_dirty(tmp_path):
    env = Env(tmp_path, min_compaction_lag_ms=60_000)
    env.append((b"a", b"1"), roll=True)
    env.append((b"a", b"2"), roll=True)
    assert env.manager.clean_once() is None
    env.clock.advance(60_001)
    assert env.manager.clean_once() is not None
    assert env.records() == [(1, b"a", b"2")]


def test_max_compaction_lag_forces_a_clean_below_the_dirty_ratio(tmp_path):
    env = Env(tmp_path)
    for i in range(4):
        env.append((b"k%d" % i, b"x" * 200), roll=True)
    assert env.manager.clean_once() is not None  # everything is clean now
    env.append((b"k0", b"y"), roll=True)  # a small dirty segment: ratio far below 0.9
    env.plog.config = topic_config(min_cleanable_dirty_ratio=0.9, max_compaction_lag_ms=1000)
    assert env.manager.clean_once() is None
    env.clock.advance(1001)
    assert env.manager.clean_once() is not None
    assert env.records()[-1] == (4, b"k0", b"y") and (0, b"k0", b"x" * 200) \
        not in env.records()


def test_control_batches_and_the_last_batch_of_a_producer_are_kept(tmp_path):
    env = Env(tmp_path)
    env.append((b"a", b"1"), producer_id=5, producer_epoch=0, base_sequence=0)
    data = bytearray(build_batch([end_txn_marker(True, 0, NOW)], producer_id=9,
                                 producer_epoch=0, is_control=True))
    env.plog.append_as_leader(data, read_header(data), 0)
    env.append((b"a", b"2"), roll=True)
    env.manager.clean_once()
    batches = env.batches()
    # producer 5's only batch lost its record but stays, empty, for its sequence
    assert [(b.header.base_offset, b.header.last_offset, len(b.records))
            for b in batches] == [(0, 0, 0), (1, 1, 1), (2, 2, 1)]
    assert batches[0].header.producer_id == 5 and batches[0].header.base_sequence == 0
    assert batches[1].header.is_control
    assert env.records()[-1] == (2, b"a", b"2")


def test_keyless_records_are_removed_with_a_warning(tmp_path, caplog):
    env = Env(tmp_path)
    env.append((None, b"no key"), (b"a", b"1"), roll=True)
    env.append((b"a", b"2"), roll=True)
    with caplog.at_level(logging.WARNING, logger="strom.log.cleaner"):
        result = env.manager.clean_once()
    assert result is not None and result.stats.invalid_records == 1
    assert env.records() == [(2, b"a", b"2")]
    assert "without a key" in caplog.text


def test_a_failing_clean_marks_only_that_log_uncleanable(tmp_path, monkeypatch, caplog):
    env = Env(tmp_path)
    other = env.logs.get_or_create("u", 0, topic_config(), TOPIC_ID)
    env.append((b"a", b"1"), roll=True)
    env.append((b"a", b"2"), roll=True)
    before = env.records()

    def full_disk(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cleaner_mod.CleanedSegmentWriter, "finish", full_disk)
    with caplog.at_level(logging.ERROR):
        assert env.manager.clean_once() is None
    assert ("t", 0) in env.manager.uncleanable and "No space left" in caplog.text
    assert env.records() == before  # the log is untouched and still served
    assert not [n for n in os.listdir(env.plog.dir) if n.endswith((".cleaned", ".swap"))]
    monkeypatch.undo()
    assert env.manager.clean_once() is None  # t-0 is skipped from now on
    for v in (b"1", b"2"):  # ... while other logs are still cleaned
        data = bytearray(build_batch([NewRecord(v, key=b"k", timestamp=NOW)]))
        other.append_as_leader(data, read_header(data), 0)
        other.high_watermark = other.log_end_offset
        other.roll()
    result = env.manager.clean_once()
    assert result is not None and env.manager.checkpoint_of("u", 0) == 2


def _history(env: Env) -> None:
    for i in range(30):
        value = None if i % 11 == 10 else b"v%d" % i
        env.append((b"k%d" % (i % 7), value), (b"k%d" % ((i * 3) % 5), b"w%d" % i),
                   roll=i % 4 == 3)
    env.plog.roll()


def clean_until_crash(env: Env, step: str, monkeypatch) -> None:
    """A clean of `env` that "dies" at `step` of its swap ("cleaned": the .cleaned files are
    written, the swap not begun)."""
    def hook(name: str) -> None:
        if name == step:
            raise SimulatedCrash(name)

    if step == "cleaned":
        finish = cleaner_mod.CleanedSegmentWriter.finish

        def finish_then_crash(self):
            finish(self)
            hook("cleaned")

        monkeypatch.setattr(cleaner_mod.CleanedSegmentWriter, "finish", finish_then_crash)
    env.manager.step = hook
    with pytest.raises(SimulatedCrash):
        env.manager.clean_once()
    monkeypatch.undo()


CRASH_STEPS = ["cleaned", "swap.index", "swap.timeindex", "swap.log", "deleted.0",
               "deleted.1", "final.index", "final.timeindex", "final.log"]


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_a_crash_at_any_step_of_a_swap_leaves_a_log_equal_to_a_clean_run(tmp_path, step,
                                                                         monkeypatch):
    env = Env(tmp_path / "crash", segment_bytes=100_000)
    _history(env)
    original = env.records()
    reference_dir = str(tmp_path / "reference")
    env.plog.fsync()
    shutil.copytree(env.root, reference_dir, ignore=shutil.ignore_patterns(".lock"))
    ref = Env(tmp_path / "reference-parent")  # a clean run on a copy
    ref.close()
    shutil.rmtree(ref.root)
    shutil.move(reference_dir, ref.root)
    ref.open()
    ref.manager.clean_once()
    expected = ref.records()
    assert latest_per_key(expected) == latest_per_key(original) and expected != original

    clean_until_crash(env, step, monkeypatch)
    env.crash()
    env.open()  # recovery
    recovered = env.records()
    offsets = [o for o, _, _ in recovered]
    assert offsets == sorted(set(offsets))
    assert latest_per_key(recovered) == latest_per_key(original)
    # before the `.log.swap` exists the clean is undone; from then on it is completed
    done = CRASH_STEPS.index(step) >= CRASH_STEPS.index("swap.log")
    assert recovered == (expected if done else original)
    assert not [n for n in os.listdir(env.plog.dir)
                if n.endswith((".cleaned", ".swap", ".deleted"))]
    env.manager.clean_once()  # the checkpoint did not move: the round is done again
    assert env.records() == expected


def test_a_full_key_map_cleans_in_several_rounds(tmp_path):
    env = Env(tmp_path)
    for i in range(40):
        env.append((b"k%d" % (i % 10), b"v%d" % i), roll=i % 5 == 4)
    env.manager.map_memory = int(6 * (cleaner_mod.MAP_ENTRY_OVERHEAD + 2) /
                                 cleaner_mod.MAP_LOAD_FACTOR) + 1  # room for 6 keys
    checkpoints = []
    while (result := env.manager.clean_once()) is not None:
        checkpoints.append(result.end_offset)
    assert len(checkpoints) > 1 and checkpoints == sorted(checkpoints)
    assert checkpoints[-1] == 40
    assert env.records() == [(30 + i, b"k%d" % i, b"v%d" % (30 + i)) for i in range(10)]


def test_a_log_deleted_while_being_cleaned_is_not_marked_uncleanable(tmp_path, monkeypatch):
    env = Env(tmp_path)
    env.append((b"a", b"1"), roll=True)
    env.append((b"a", b"2"), roll=True)
    finish = cleaner_mod.CleanedSegmentWriter.finish

    def delete_then_finish(self):
        env.logs.delete("t", 0)  # a topic deletion on the loop, while the thread writes
        finish(self)

    monkeypatch.setattr(cleaner_mod.CleanedSegmentWriter, "finish", delete_then_finish)
    assert env.manager.clean_once() is None
    assert not env.manager.uncleanable
    assert not os.path.exists(env.plog.dir)


def test_reads_pass_over_segments_the_cleaner_emptied(tmp_path):
    """Every record of the first segments is superseded later: cleaning leaves them empty
    (base offset kept, no batch). A read at the log start must go on to the first segment
    that has data; it stopped at the first empty one whose base was past the offset, and a
    consumer at offset 0 got empty answers for ever."""
    env = Env(tmp_path, segment_bytes=700)
    for i in range(30):  # 30 updates of one key: each segment holds a few of them
        env.append((b"K", b"v%d-" % i + b"x" * 60))
    env.plog.roll()
    env.append((b"other", b"active"))
    while env.manager.clean_once() is not None:
        pass
    segments = env.plog.segments
    assert any(s.size == 0 and s.base_offset > 0 for s in segments), \
        [(s.base_offset, s.size) for s in segments]
    assert env.records() == [(29, b"K", b"v29-" + b"x" * 60), (30, b"other", b"active")]
    read = env.plog.read(0, 1 << 20, env.plog.high_watermark, True)
    assert read.slice is not None
    first = read_header(os.pread(read.slice.fd, 61, read.slice.position))
    assert first.base_offset <= 29 <= first.last_offset


def test_a_log_truncated_into_a_segment_being_cleaned_is_not_swapped(tmp_path, monkeypatch):
    """A follower's truncation inside a closed segment being cleaned, then a roll: the
    group's segment objects are all still there, but the cleaned copy holds the records
    the truncation removed. Before, the swap went ahead and brought them back (offsets
    4 and 5 twice, the old values first)."""
    env = Env(tmp_path)
    env.append((b"a", b"0"))
    env.append((b"b", b"1"))
    env.append((b"c", b"2"), roll=True)
    env.append((b"d", b"3"))
    env.append((b"e", b"old4"))
    env.append((b"f", b"old5"), roll=True)
    env.append((b"g", b"6"))  # active
    finish = cleaner_mod.CleanedSegmentWriter.finish

    def truncate_then_finish(self):
        env.plog.truncate_to(4)  # on the loop, while the thread writes
        env.append((b"e", b"new4"), roll=True)
        finish(self)

    monkeypatch.setattr(cleaner_mod.CleanedSegmentWriter, "finish", truncate_then_finish)
    assert env.manager.clean_once() is None
    offsets = [o for o, _, _ in env.records()]
    assert offsets == sorted(set(offsets))
    assert env.records()[-1] == (4, b"e", b"new4")
    assert not [n for n in os.listdir(env.plog.dir) if n.endswith((".cleaned", ".swap"))]


def test_cleaner_threads_write_the_checkpoint_file_one_at_a_time(tmp_path, monkeypatch):
    """log.cleaner.threads > 1: two threads finishing together wrote the same
    `cleaner-offset-checkpoint.tmp` at once (a mixed or lost file, or a failed rename)."""
    import threading

    import strom.log.cleaner_manager as manager_mod

    env = Env(tmp_path)
    both_inside = threading.Barrier(2)
    overlaps = []
    real_write = manager_mod.checkpoint.write_offsets

    def write(path, offsets):
        try:
            both_inside.wait(timeout=1)  # passes only if the other thread writes meanwhile
            overlaps.append(path)
        except threading.BrokenBarrierError:
            pass
        real_write(path, offsets)

    monkeypatch.setattr(manager_mod.checkpoint, "write_offsets", write)
    threads = [threading.Thread(target=env.manager._set_checkpoint, args=(("t", 0), n))
               for n in (5, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert overlaps == []
    assert env.manager.checkpoint_of("t", 0) in (5, 7)
