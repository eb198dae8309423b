"""How segments use the OS page cache: drop-behind for what is written, and which reads may
have to wait for the disk.

Like Kafka, strom leaves caching to the OS: appends go to the page cache and reads are
served from it. Left alone, the cache grows by every byte written until memory runs short.
On virtual machines that hand free guest memory back to their host (virtio-balloon free
page reporting, as on Firecracker and many clouds), each page the cache takes anew costs a
fault in the host: writing into fresh cache measured 1.0-1.4 s of kernel time per GB on
our 2-core machine, against 0.35-0.65 s when the kernel could reuse pages it had just freed
(bench/page_cache.py).

`PageCacheWindow` keeps the newest `log.page.cache.window.bytes` of each segment cached
and lets the rest go: once a segment has grown a step (a quarter window, at least 1 MiB)
past its window, a job writes the bytes behind the window to disk and waits for them
(sync_file_range), then drops them from the cache (posix_fadvise DONTNEED). Jobs run one at
a time on the window's own thread, on a duplicate of the segment's descriptor, so neither
the event loop nor the executor of fsyncs waits for the disk, and a segment closed meanwhile
is never confused with another file. A segment whose last job is still running gives no
new one: its next job covers both ranges. A window of -1 leaves everything to the OS, as
Kafka does; so does an OS without sync_file_range and posix_fadvise (anything not Linux).

`SegmentCache.kept_from` also tells reads which bytes may be on disk only: those behind the
window and those the segment held before this process opened it. The connection reads such
cold slices off the event loop rather than letting sendfile block it on the disk.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

MIN_STEP_BYTES = 1 << 20
NEVER = 1 << 62
# linux/fs.h
SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE, SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4
_WRITE_AND_WAIT = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER


def _load_sync_file_range() -> Callable[..., int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()
SUPPORTED = _sync_file_range is not None and hasattr(os, "posix_fadvise")


def write_back_and_drop(fd: int, start: int, end: int) -> None:
    """Write bytes [start, end) of `fd` to disk, wait for them, drop them from the page
    cache, and close `fd` (a duplicate made for this job)."""
    try:
        if _sync_file_range(fd, start, end - start, _WRITE_AND_WAIT) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)
    except OSError as e:  # the cache is only advised: nothing depends on it
        log.debug("Dropping written bytes from the page cache failed: %s", e)
    finally:
        os.close(fd)


class PageCacheWindow:
    """The drop-behind policy of a broker's segments, and the thread its jobs run on."""

    def __init__(self, window_bytes: int = -1,
                 submit: Callable[[Callable[[], None]], object] | None = None) -> None:
        if window_bytes >= 0 and not SUPPORTED:
            log.info("log.page.cache.window.bytes is ignored: this OS has no "
                     "sync_file_range and posix_fadvise")
            window_bytes = -1
        self.window = window_bytes
        self.step = max(window_bytes // 4, MIN_STEP_BYTES)
        self._submit = submit
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def enabled(self) -> bool:
        return self.window >= 0

    def segment(self, size: int) -> SegmentCache:
        """The cache state of a segment opened with `size` bytes already in it."""
        return SegmentCache(self, size)

    def submit(self, job: Callable[[], None]) -> object:
        """Run `job` on the window's thread (or the `submit` given, for tests); returns
        something with `done()` while it may still be running, else None."""
        if self._submit is not None:
            return self._submit(job)
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="strom-page-cache")
        return self._executor.submit(job)

    def close(self) -> None:
        """Wait for the jobs given (each writes at most a window step of one segment)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


class SegmentCache:
    """Which bytes of one segment are left to the page cache."""

    __slots__ = ("window", "kept_from", "next_drop_at", "_job")

    def __init__(self, window: PageCacheWindow, size: int) -> None:
        self.window = window
        # bytes before kept_from predate this process or were dropped from the cache
        self.kept_from = size
        self.next_drop_at = self._next(size)
        self._job: object = None

    def _next(self, kept_from: int) -> int:
        w = self.window
        return kept_from + w.window + w.step if w.enabled else NEVER

    def appended(self, fd: int, size: int) -> None:
        """Called when the segment has reached `next_drop_at`."""
        job = self._job
        if job is not None and not job.done():  # type: ignore[attr-defined]
            return  # the next append tries again; that job then covers both ranges
        end = size - self.window.window
        self._job = self.window.submit(
            functools.partial(write_back_and_drop, os.dup(fd), self.kept_from, end))
        self.kept_from = end
        self.next_drop_at = self._next(end)

    def truncated(self, size: int) -> None:
        if size < self.kept_from:
            self.kept_from = size
            self.next_drop_at = self._next(size)


def read_cold(fd: int, size: int, position: int) -> bytes:
    """pread on a duplicate of `fd` (made by the caller, closed here): for an executor."""
    try:
        return os.pread(fd, size, position)
    finally:
        os.close(fd)
