"""Drop-behind of written segment bytes (log.page.cache.window.bytes) and cold reads: which
ranges a segment advises out of the page cache and when, that data reads back intact, and
(where the filesystem honours the advice) that the cache held by a segment stays bounded."""

from __future__ import annotations

import concurrent.futures
import os

import pytest

from strom.log.page_cache import MIN_STEP_BYTES, NEVER, PageCacheWindow, read_cold
from strom.log.records import NewRecord, build_batch
from strom.log.segment import LogSegment
from strom.protocol.batch import read_header
from strom.testing.page_cache import dontneed_honoured, resident_bytes

TS = 1_700_000_000_000
MIB = 1 << 20
VALUE = 64 * 1024 - 100  # one record a batch: batches just under 64 KiB


class Recorder:
    """A `submit` that records each job's range and runs it now (so its descriptor is
    closed), or, with `hold`, keeps it pending until `release()`."""

    def __init__(self, hold: bool = False) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.hold = hold
        self.pending: list[concurrent.futures.Future] = []

    def __call__(self, job) -> concurrent.futures.Future:
        fd, start, end = job.args
        self.ranges.append((start, end))
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self.hold:
            self.pending.append((job, future))
        else:
            job()
            future.set_result(None)
        return future

    def release(self) -> None:
        for job, future in self.pending:
            job()
            future.set_result(None)
        self.pending.clear()


def segment(tmp_path, window: PageCacheWindow, create: bool = True) -> LogSegment:
    return LogSegment(str(tmp_path), 0, 4096, 1 << 20, created_ms=TS, create=create,
                      page_cache=window)


def append(seg: LogSegment, count: int) -> list[bytes]:
    batches = []
    for _ in range(count):
        value = os.urandom(VALUE)
        batch = build_batch([NewRecord(value, timestamp=TS)], base_offset=seg.next_offset)
        seg.append(batch, read_header(batch))
        batches.append(bytes(batch))
    return batches


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_disabled_window_never_advises(tmp_path):
    rec = Recorder()
    seg = segment(tmp_path, PageCacheWindow(-1, rec))
    append(seg, 40)
    assert rec.ranges == []
    assert seg.cache.next_drop_at == NEVER
    assert seg.cache.kept_from == 0
    assert not seg.read(0, 1 << 30, 1 << 62, True).cold  # written by this process
    seg.close()


def test_bytes_behind_the_window_are_written_back_and_dropped_in_steps(tmp_path):
    rec = Recorder()
    window = 4 * MIB  # step: 1 MiB
    seg = segment(tmp_path, PageCacheWindow(window, rec))
    fds = open_fds()
    sizes = []
    for _ in range(200):  # ~12.5 MiB
        append(seg, 1)
        if len(sizes) < len(rec.ranges):
            sizes.append(seg.size)
    assert open_fds() == fds, "the duplicated descriptors are closed after each job"
    assert len(rec.ranges) >= 7
    # the first job comes once the segment is a step past the window
    assert window + MIB <= sizes[0] < window + MIB + 64 * 1024
    for (_, end), size in zip(rec.ranges, sizes, strict=True):
        assert end == size - window  # everything behind the window
    starts = [start for start, _ in rec.ranges]
    assert starts == [0] + [end for _, end in rec.ranges[:-1]]  # contiguous, no gaps
    assert seg.cache.kept_from == rec.ranges[-1][1]
    seg.close()


def test_a_segment_with_a_job_running_waits_and_then_covers_both_ranges(tmp_path):
    rec = Recorder(hold=True)
    seg = segment(tmp_path, PageCacheWindow(0, rec))  # window 0: step 1 MiB
    append(seg, 17)  # just past 1 MiB
    assert len(rec.ranges) == 1
    first_end = rec.ranges[0][1]
    append(seg, 40)  # ~2.5 MiB more: the job still runs, no second one
    assert len(rec.ranges) == 1
    rec.release()
    append(seg, 1)
    assert rec.ranges[1] == (first_end, seg.size)
    rec.release()
    seg.close()


def test_reads_behind_the_window_are_cold_and_read_back_intact(tmp_path):
    seg = segment(tmp_path, PageCacheWindow(1 * MIB))  # the window's own thread, really
    batches = append(seg, 100)  # ~6.4 MiB
    seg.cache.window.close()  # wait for its jobs
    assert seg.cache.kept_from > 0
    cold = seg.read(0, 1 << 30, 1 << 62, False)
    assert cold.cold and cold.position == 0
    assert read_cold(os.dup(cold.fd), cold.size, cold.position) == b"".join(batches)
    newest = seg.read(seg.next_offset - 1, 1 << 30, 1 << 62, True)
    assert not newest.cold and newest.read() == batches[-1]
    seg.close()


def test_bytes_on_disk_before_open_are_cold_new_ones_are_not(tmp_path):
    seg = segment(tmp_path, PageCacheWindow(64 * MIB))
    old = append(seg, 3)
    seg.close()
    seg = segment(tmp_path, PageCacheWindow(64 * MIB), create=False)
    seg.load_indexes()
    assert seg.cache.kept_from == sum(len(b) for b in old)
    assert seg.read(0, 1 << 30, 1 << 62, True).cold
    new = append(seg, 1)
    hot = seg.read(seg.next_offset - 1, 1 << 30, 1 << 62, True)
    assert not hot.cold and hot.read() == new[0]
    seg.close()


def test_truncation_below_the_window_moves_it_back(tmp_path):
    rec = Recorder()
    seg = segment(tmp_path, PageCacheWindow(0, rec))  # window 0: step is 1 MiB
    append(seg, 40)  # ~2.5 MiB
    assert seg.cache.kept_from >= 2 * MIB
    seg.truncate_to(5)
    truncated_size = seg.size
    assert seg.cache.kept_from == truncated_size
    rec.ranges.clear()
    append(seg, 20)  # a step past the new end
    assert rec.ranges[0][0] == truncated_size
    seg.close()


def test_step_is_a_quarter_window_and_at_least_1_mib():
    assert PageCacheWindow(64 * MIB).step == 16 * MIB
    assert PageCacheWindow(0).step == MIN_STEP_BYTES
    assert PageCacheWindow(-1).segment(0).next_drop_at == NEVER
    assert PageCacheWindow(0).segment(5).next_drop_at == 5 + MIN_STEP_BYTES


def test_page_cache_held_by_a_segment_stays_bounded(tmp_path):
    if not dontneed_honoured(tmp_path):
        pytest.skip("no fincore, or this filesystem keeps pages cached despite "
                    "POSIX_FADV_DONTNEED")
    window = PageCacheWindow(2 * MIB)
    seg = segment(tmp_path, window)
    append(seg, 512)  # 32 MiB
    window.close()  # wait for the jobs
    resident = resident_bytes(seg.log_path)
    assert resident <= seg.size - seg.cache.kept_from + MIB, (  # ~ window + step, of 32
        f"{resident} bytes of {seg.size} cached with a 2 MiB window")
    seg.close()
