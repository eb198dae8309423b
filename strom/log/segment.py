"""A log segment: one `.log` file of record batches with its offset and time indexes.

The `.log` file is a plain sequence of v2 record batches (see protocol/batch.py), each with
its absolute base offset patched in. Owned by its PartitionLog (the broker's event loop);
file descriptors are closed only by `close()`/`delete()`.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import struct
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from strom.log.files import (
    DELETED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    TXN_INDEX_SUFFIX,
    segment_path,
)
from strom.log.index import CorruptIndexError, OffsetIndex, TimeIndex
from strom.log.page_cache import PageCacheWindow
from strom.protocol.batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_V2,
    BatchHeader,
    InvalidBatch,
    crc_is_valid,
    read_header,
)

log = logging.getLogger(__name__)

# a batch's baseOffset, batchLength, partitionLeaderEpoch and magic (see protocol/batch.py)
_BASE_LENGTH_MAGIC = struct.Struct(">qiib")

# a hot slice of the tail map up to this size is read at once (see LogSegment.read); the
# connection sends larger ones with sendfile (server/connection.py, SENDFILE_MIN_BYTES)
PREREAD_MAX_BYTES = 64 * 1024 - 1


@dataclass(slots=True)
class FileSlice:
    """`size` bytes at `position` of an open segment file: sent with sendfile or pread, or,
    when `cold` (maybe not in the page cache, see log/page_cache.py), read off the loop."""

    fd: int
    position: int
    size: int
    cold: bool = False
    data: bytes | None = None  # the bytes, when they were read already (a small tail read)

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        return os.pread(self.fd, self.size, self.position)


class CorruptBatch(InvalidBatch):
    """A batch of a segment file that cannot be read (a header that does not parse, or a
    length running past the end of the file): `path` and `position` say where."""

    def __init__(self, path: str, position: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt batch at position {position}: {reason}")
        self.path = path
        self.position = position
        self.reason = reason


def unlink_paths(paths: Sequence[str]) -> None:
    """Blocking (run it off the loop): remove files, those already gone aside."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


@dataclass(frozen=True, slots=True)
class BatchPosition:
    position: int
    header: BatchHeader


NO_WINDOW = PageCacheWindow()

# batches the tail map of a segment holds at most (see TailBatches)
MAX_TAIL_BATCHES = 512


class TailBatches:
    """Where each of the active segment's newest batches is: a dense map of its last
    MAX_TAIL_BATCHES batches at most (older ones drop off the front; a reopened segment
    starts the map at its last offset-index entry), kept as batches are appended.

    A fetch at or near the log end (a consumer tailing the log, even one a few hundred
    batches behind; a follower) finds its batches here by bisection, with no read of the
    file; the sparse offset index plus a scan of batch headers is the path for everything
    older. A segment that rolls drops its map. Owned by its segment.

        starts[i]  file position of batch i      bases[i] its base offset
        ends[i]    position after batch i        lasts[i] its last offset
    """

    __slots__ = ("starts", "ends", "bases", "lasts")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.starts = array("q")
        self.ends = array("q")
        self.bases = array("q")
        self.lasts = array("q")

    def add(self, position: int, header: BatchHeader) -> None:
        if len(self.starts) >= MAX_TAIL_BATCHES:
            half = MAX_TAIL_BATCHES // 2
            del self.starts[:half], self.ends[:half], self.bases[:half], self.lasts[:half]
        self.starts.append(position)
        self.ends.append(position + header.size)
        self.bases.append(header.base_offset)
        self.lasts.append(header.last_offset)

    def covers(self, offset: int) -> bool:
        """True if the first batch holding an offset >= `offset` is mapped here (or there
        is none in the segment): every batch before the map ends below its first base."""
        return bool(self.bases) and offset >= self.bases[0]

    def read(self, offset: int, max_bytes: int, max_offset: int, min_one: bool
             ) -> tuple[int, int, int, int] | None:
        """(position, size, first batch's base offset, first batch's size) of the whole
        batches `LogSegment.read` would return, for an offset the map `covers`."""
        i = bisect.bisect_left(self.lasts, offset)
        if i == len(self.lasts) or self.bases[i] >= max_offset:
            return None
        start = self.starts[i]
        below = bisect.bisect_left(self.bases, max_offset, i)  # batches i..below-1
        fit = bisect.bisect_right(self.ends, start + max_bytes, i, below)
        if fit == i:
            if not min_one:
                return None
            fit = i + 1
        return start, self.ends[fit - 1] - start, self.bases[i], self.ends[i] - start

    def find(self, offset: int) -> int | None:
        """Position of the first batch whose last offset is >= `offset`, for an offset the
        map `covers`; None if there is none."""
        i = bisect.bisect_left(self.lasts, offset)
        return self.starts[i] if i < len(self.lasts) else None


class LogSegment:
    def __init__(self, dir_: str, base_offset: int, index_interval_bytes: int,
                 max_index_size: int, created_ms: int, create: bool = False,
                 page_cache: PageCacheWindow = NO_WINDOW) -> None:
        self.dir = dir_
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.log_path = segment_path(dir_, base_offset, LOG_SUFFIX)
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
        self.fd = os.open(self.log_path, flags, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.index = OffsetIndex(segment_path(dir_, base_offset, INDEX_SUFFIX), base_offset,
                                 max_index_size)
        self.time_index = TimeIndex(segment_path(dir_, base_offset, TIME_INDEX_SUFFIX),
                                    base_offset, max_index_size)
        self.bytes_since_last_index_entry = 0
        self.max_timestamp = -1
        self.offset_of_max_timestamp = base_offset
        self.next_offset = base_offset  # offset after the last batch
        self.created_ms = created_ms
        self.first_batch_timestamp: int | None = None
        self.cache = page_cache.segment(self.size)  # see log/page_cache.py
        self.tail = TailBatches()
        if create:
            for p in (self.index.path, self.time_index.path):
                open(p, "ab").close()

    # --- loading ------------------------------------------------------------------
    def load_indexes(self) -> bool:
        """Load the index files; rebuild them from the log if missing or corrupt.

        Returns True when they had to be rebuilt.
        """
        try:
            for path in (self.index.path, self.time_index.path):
                if not os.path.exists(path) and self.size > 0:
                    raise CorruptIndexError(f"{path} is missing")
            self.index.load(self.size)
            self.time_index.load()
            self._load_tail_state()
            self._check_loaded_indexes()
            return False
        except (CorruptIndexError, InvalidBatch) as e:
            log.warning("Rebuilding indexes of %s: %s", self.log_path, e)
            truncated = self.recover()
            if truncated:
                log.error("%s: removed %d bytes from position %d: corrupt batches",
                          self.log_path, truncated, self.size)
            return True

    def _load_tail_state(self) -> None:
        """Find next offset and max timestamp from the last index entry onwards."""
        _, position = self.index.lookup(1 << 62)
        ts, ts_offset = self.time_index.last_entry
        self.max_timestamp, self.offset_of_max_timestamp = ts, ts_offset
        self.bytes_since_last_index_entry = 0
        self.tail.clear()
        for bp in self.batches(position):
            self._track(bp.header)
            self.tail.add(bp.position, bp.header)
            self.bytes_since_last_index_entry += bp.header.size
        first = next(self.batches(0), None)
        if first is not None:
            self.first_batch_timestamp = first.header.max_timestamp

    def _check_loaded_indexes(self) -> None:
        """Beyond Kafka's sanity check (sizes, increasing entries): every entry names an
        offset inside this segment, and the last offset-index entry points at the batch
        that ends at its offset (one read). Raises CorruptIndexError."""
        end = self.next_offset
        if len(self.index):
            offset, position = self.index.lookup(1 << 62)
            if not self.base_offset <= offset < end:
                raise CorruptIndexError(f"{self.index.path}: offset {offset} outside "
                                        f"{self.base_offset}..{end - 1}")
            if read_header(os.pread(self.fd, HEADER_SIZE, position)).last_offset != offset:
                raise CorruptIndexError(f"{self.index.path}: entry for offset {offset} does "
                                        f"not point at its batch (position {position})")
        if len(self.time_index) and not (
                self.time_index.relative_offsets[0] >= 0
                and self.time_index.last_entry[1] < max(end, self.base_offset + 1)):
            raise CorruptIndexError(f"{self.time_index.path}: offsets outside the segment")

    def _track(self, header: BatchHeader) -> None:
        self.next_offset = header.last_offset + 1
        if header.max_timestamp > self.max_timestamp:
            self.max_timestamp = header.max_timestamp
            self.offset_of_max_timestamp = header.last_offset

    def recover(self, max_batch_size: int = 1 << 31, limit_offset: int | None = None) -> int:
        """Scan every batch, rebuild both indexes and truncate an invalid tail: a batch that
        does not parse, is torn, fails its CRC, goes back in offsets, or whose offsets do
        not fit this segment (baseOffset is outside the CRC): beyond what the indexes'
        4-byte relative offsets hold, or at or after `limit_offset` (the next segment's base
        offset).

        Returns the number of bytes truncated.
        """
        if limit_offset is None:
            limit_offset = self.base_offset + (1 << 31)
        limit_offset = min(limit_offset, self.base_offset + (1 << 31))
        self.index.reset()
        self.time_index.reset()
        self.tail.clear()
        self.bytes_since_last_index_entry = 0
        self.max_timestamp, self.offset_of_max_timestamp = -1, self.base_offset
        self.next_offset = self.base_offset
        self.first_batch_timestamp = None
        position = 0
        valid_end = 0
        while position < self.size:
            data = os.pread(self.fd, HEADER_SIZE, position)
            try:
                header = read_header(data)
            except InvalidBatch as e:
                log.warning("%s: invalid batch at position %d: %s", self.log_path, position, e)
                break
            if header.size > max_batch_size or position + header.size > self.size:
                log.warning("%s: torn batch at position %d", self.log_path, position)
                break
            if header.base_offset < self.next_offset:
                log.warning("%s: offset %d goes backwards at %d", self.log_path,
                            header.base_offset, position)
                break
            if header.last_offset >= limit_offset:
                log.warning("%s: offset %d at %d is beyond the segment (limit %d)",
                            self.log_path, header.last_offset, position, limit_offset)
                break
            full = os.pread(self.fd, header.size, position)
            if not crc_is_valid(full, 0, header):
                log.warning("%s: CRC mismatch at position %d", self.log_path, position)
                break
            self._index_batch(header, position)
            if self.first_batch_timestamp is None:
                self.first_batch_timestamp = header.max_timestamp
            position += header.size
            valid_end = position
        truncated = self.size - valid_end
        if truncated:
            os.ftruncate(self.fd, valid_end)
            self.size = valid_end
            self.cache.truncated(valid_end)
        self.index.flush()
        if self.max_timestamp >= 0:
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
        self.time_index.flush()
        return truncated

    # --- writing ------------------------------------------------------------------
    def _index_batch(self, header: BatchHeader, position: int) -> None:
        self._track(header)
        if self.bytes_since_last_index_entry > self.index_interval_bytes:
            self.index.append(header.last_offset, position)  # Kafka indexes last offsets
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self.bytes_since_last_index_entry = 0
        self.tail.add(position, header)
        self.bytes_since_last_index_entry += header.size

    def append(self, data: bytes | bytearray | memoryview, header: BatchHeader) -> int:
        """Append one batch whose offsets are assigned; returns its file position."""
        return self.append_batches(data, (header,))

    def append_batches(self, data: bytes | bytearray | memoryview,
                       headers: Sequence[BatchHeader]) -> int:
        """Append consecutive batches (offsets assigned, `data` holding exactly them) in
        one write; returns the file position of the first."""
        position = self.size
        size = len(data)
        try:
            written = os.write(self.fd, data)
            while written < size:  # a short write to a regular file is rare but legal
                written += os.write(self.fd, memoryview(data)[written:])
        except OSError:
            # ENOSPC, EIO... after part of the data: cut it off, or the next append (O_APPEND)
            # would land after it while its position and index entry say `position`
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, position)
            raise
        self.size += size
        if self.size >= self.cache.next_drop_at:
            self.cache.appended(self.fd, self.size)
        if self.first_batch_timestamp is None:
            self.first_batch_timestamp = headers[0].max_timestamp
        pos = position
        for header in headers:
            self._index_batch(header, pos)
            pos += header.size
        return position

    def flush(self) -> None:
        """Write pending index entries to the OS (not fsync)."""
        self.index.flush()
        self.time_index.flush()

    def fsync(self) -> None:
        self.flush()
        self.fsync_files()

    def fsync_files(self) -> None:
        """fsync the log and the index files as they are on disk (no pending entries are
        written: safe off the event loop)."""
        if self.fd >= 0:
            try:
                os.fsync(self.fd)
            except OSError as e:  # closed under us by a topic deletion
                log.debug("fsync of %s skipped: %s", self.log_path, e)
        self.index.fsync_file()
        self.time_index.fsync_file()

    def on_roll(self) -> None:
        """The segment becomes read-only: record the final time index entry."""
        if self.max_timestamp >= 0:
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
        self.flush()
        self.tail.clear()  # reads of a closed segment go through its offset index

    # --- reading ------------------------------------------------------------------
    def batches(self, position: int = 0, end: int | None = None) -> Iterator[BatchPosition]:
        """Headers of the batches from `position` (a batch boundary) to `end`.

        Raises CorruptBatch at a header that does not parse, or, when reading to the end
        of the file, at a batch (or a tail shorter than a header) that runs past it:
        appends write whole batches, so the file never ends inside a healthy one."""
        to_eof = end is None or end >= self.size
        end = self.size if end is None else end
        while position + HEADER_SIZE <= end:
            try:
                header = read_header(os.pread(self.fd, HEADER_SIZE, position))
            except InvalidBatch as e:
                raise CorruptBatch(self.log_path, position, str(e)) from None
            if position + header.size > end:
                if to_eof:
                    raise CorruptBatch(self.log_path, position,
                                       f"batch length {header.batch_length} runs past the "
                                       f"end of the file ({self.size} bytes)")
                return
            yield BatchPosition(position, header)
            position += header.size
        if to_eof and position < end:
            raise CorruptBatch(self.log_path, position,
                               f"{end - position} bytes at the end of the file are not a "
                               "batch")

    def find_batch(self, offset: int, end: int | None = None) -> BatchPosition | None:
        """The first batch whose last offset is >= `offset`."""
        if self.tail.covers(offset):
            position = self.tail.find(offset)
            if position is None:
                return None
        else:
            _, position = self.index.lookup(offset)
        for bp in self.batches(position, end):
            if bp.header.last_offset >= offset:
                return bp
        return None

    def read(self, offset: int, max_bytes: int, max_offset: int, min_one: bool
             ) -> FileSlice | None:
        """Whole batches starting with the one holding `offset`, stopping before
        `max_offset` (exclusive) and after `max_bytes` (but at least one batch when
        `min_one`)."""
        if self.tail.covers(offset):  # at or near the end: no scan of the file
            found = self.tail.read(offset, max_bytes, max_offset, min_one)
            if found is None:
                return None
            position, size, base_offset, first_size = found
            cold = position < self.cache.kept_from
            if cold or size > PREREAD_MAX_BYTES:
                self._check_header(position, base_offset, first_size)
                return FileSlice(self.fd, position, size, cold)
            # a small hot slice (a tailing consumer's, a follower's): read now, in the same
            # pread as its header check, so the connection sends it with no read of its own
            data = os.pread(self.fd, size, position)
            if len(data) < size:
                raise CorruptBatch(self.log_path, position,
                                   f"{size} bytes were appended here, the file has {len(data)}")
            self._check_header(position, base_offset, first_size, data)
            return FileSlice(self.fd, position, size, False, data)
        first = self.find_batch(offset)
        if first is None or first.header.base_offset >= max_offset:
            return None
        size = 0
        position = first.position
        try:
            for bp in self.batches(first.position):
                if bp.header.base_offset >= max_offset:
                    break
                if size + bp.header.size > max_bytes and (size or not min_one):
                    break
                size += bp.header.size
        except CorruptBatch:
            pass  # serve the batches before it; a fetch of the corrupt one gets the error
        if size == 0:
            return None
        return FileSlice(self.fd, position, size, position < self.cache.kept_from)

    def _check_header(self, position: int, base_offset: int, size: int,
                      data: bytes | None = None) -> None:
        """The file still holds the batch the tail map says is at `position` (one header
        read, or `data` read from there: what a scan from the index would have read of the
        first batch); CorruptBatch if not, OSError if the file cannot be read."""
        if data is None:
            data = os.pread(self.fd, HEADER_SIZE, position)
        if len(data) >= HEADER_SIZE:
            # the common case, without the whole header parsed: the fields the map names
            found_base, length, _epoch, magic = _BASE_LENGTH_MAGIC.unpack_from(data)
            if found_base == base_offset and length + LOG_OVERHEAD == size and \
                    magic == MAGIC_V2:
                return
        try:
            header = read_header(data)
        except InvalidBatch as e:
            raise CorruptBatch(self.log_path, position, str(e)) from None
        if header.base_offset != base_offset or header.size != size:
            raise CorruptBatch(self.log_path, position,
                               f"batch of offset {header.base_offset} and {header.size} bytes "
                               f"where offset {base_offset} and {size} bytes were appended")

    def read_bytes(self, position: int, size: int) -> bytes:
        return os.pread(self.fd, size, position)

    # --- truncation and deletion -------------------------------------------------------
    def truncate_to(self, offset: int) -> int:
        """Remove batches with base offset >= `offset`; returns bytes removed."""
        bp = self.find_batch(offset)
        if bp is None:
            return 0
        position = bp.position if bp.header.base_offset >= offset else \
            bp.position + bp.header.size
        removed = self.size - position
        os.ftruncate(self.fd, position)
        self.size = position
        self.cache.truncated(position)
        self.index.truncate_to_position(position)
        self.time_index.truncate_to_offset(offset)
        # re-derive the tail state from what is left
        self.next_offset = self.base_offset
        self.max_timestamp, self.offset_of_max_timestamp = -1, self.base_offset
        self.bytes_since_last_index_entry = 0
        self.first_batch_timestamp = None
        self._load_tail_state()
        return removed

    def rename_to_deleted(self) -> None:
        """First step of deletion: rename the files with `.deleted`; the fd stays open so
        fetches in flight still read."""
        for path in (self.log_path, self.index.path, self.time_index.path,
                     segment_path(self.dir, self.base_offset, TXN_INDEX_SUFFIX)):
            if os.path.exists(path):
                os.replace(path, path + DELETED_SUFFIX)
        self.log_path += DELETED_SUFFIX
        self.index.path += DELETED_SUFFIX
        self.time_index.path += DELETED_SUFFIX

    def close(self) -> None:
        if self.fd >= 0:
            self.flush()
            os.close(self.fd)
            self.fd = -1

    def close_for_deletion(self) -> list[str]:
        """On the loop: close the files (cheap while they are still linked) and return
        the paths for `unlink_paths`, which frees their blocks off the loop."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.index.discard_pending()
        self.time_index.discard_pending()
        txn = segment_path(self.dir, self.base_offset, TXN_INDEX_SUFFIX)
        return [self.log_path, self.index.path, self.time_index.path, txn,
                txn + DELETED_SUFFIX]

    def delete(self) -> None:
        """Close and remove every file of this segment now, on the caller's thread."""
        unlink_paths(self.close_for_deletion())

    @property
    def largest_timestamp(self) -> int:
        return self.max_timestamp

    def __repr__(self) -> str:
        return f"LogSegment({self.log_path}, size={self.size}, next={self.next_offset})"
