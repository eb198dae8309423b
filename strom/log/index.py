"""Offset and time indexes: sparse maps from offsets and timestamps to file positions.

`.index` — 8-byte entries, big-endian:
    int32 relativeOffset   offset - segment base offset
    int32 position         byte position of the batch in the .log file
`.timeindex` — 12-byte entries, big-endian:
    int64 timestamp        the largest timestamp seen up to this entry
    int32 relativeOffset   the offset of the record with that timestamp

Entries are appended in increasing order every `index.interval.bytes` of appended data.
Kafka pre-allocates these files and trims them on close; we keep the entries in memory and
append them to the file, which is the trimmed form. A file that is not a whole number of
entries, or whose entries do not increase, fails `sanity_check` and is rebuilt from the log.

Owned by the segment that holds it (one event loop; no locks).
"""

from __future__ import annotations

import bisect
import os
import struct
from array import array

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


class CorruptIndexError(Exception):
    pass


class _IndexFile:
    """What both indexes share: two columns of int64 in memory (see `_columns`), entries of
    `entry` appended to the file, truncation and reset rewriting it."""

    entry: struct.Struct

    def __init__(self, path: str, base_offset: int, max_index_size: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.max_entries = max(1, max_index_size // self.entry.size)
        self._pending = bytearray()

    @property
    def is_full(self) -> bool:
        return len(self) >= self.max_entries

    def _columns(self) -> tuple[array, array]:  # pragma: no cover - subclasses
        """The two in-memory columns, in the order of an entry's fields."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._columns()[0])

    def _add(self, first: int, second: int) -> None:
        """Append an entry, in memory and to the bytes the next flush writes."""
        a, b = self._columns()
        a.append(first)
        b.append(second)
        self._pending += self.entry.pack(first, second)

    def _drop_from(self, i: int) -> None:
        """Drop the entries from the i-th on, in memory and in the file."""
        first, second = self._columns()
        if i < len(first):
            del first[i:]
            del second[i:]
            self._rewrite(b"".join(self.entry.pack(a, b)
                                   for a, b in zip(first, second, strict=True)))

    def reset(self) -> None:
        for column in self._columns():
            del column[:]
        self._rewrite(b"")

    def _read_file(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return b""
        if len(data) % self.entry.size:
            raise CorruptIndexError(
                f"{self.path}: size {len(data)} is not a multiple of {self.entry.size}"
            )
        return data

    def flush(self) -> None:
        if self._pending:
            with open(self.path, "ab") as f:
                f.write(self._pending)
            self._pending.clear()

    def fsync(self) -> None:
        self.flush()
        self.fsync_file()

    def fsync_file(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rewrite(self, data: bytes) -> None:
        self._pending.clear()
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path)

    def discard_pending(self) -> None:
        self._pending.clear()

    def delete(self) -> None:
        self._pending.clear()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class OffsetIndex(_IndexFile):
    entry = _OFFSET_ENTRY

    def __init__(self, path: str, base_offset: int, max_index_size: int) -> None:
        super().__init__(path, base_offset, max_index_size)
        self.relative_offsets = array("q")
        self.positions = array("q")

    def _columns(self) -> tuple[array, array]:
        return self.relative_offsets, self.positions

    def load(self, log_size: int) -> None:
        """Read the file; raise CorruptIndexError if it fails the sanity check."""
        data = self._read_file()
        rel, pos = array("q"), array("q")
        for r, p in _OFFSET_ENTRY.iter_unpack(data):
            if r == 0 and p == 0 and len(rel):  # pre-allocated zeros after the last entry
                break
            if (len(rel) and (r <= rel[-1] or p <= pos[-1])) or r < 0 or p < 0:
                raise CorruptIndexError(f"{self.path}: entries do not increase at {r}")
            if p >= log_size:
                raise CorruptIndexError(f"{self.path}: position {p} beyond log size {log_size}")
            rel.append(r)
            pos.append(p)
        self.relative_offsets, self.positions = rel, pos

    def append(self, offset: int, position: int) -> None:
        rel = offset - self.base_offset
        if len(self.relative_offsets) and rel <= self.relative_offsets[-1]:
            return
        self._add(rel, position)

    def lookup(self, offset: int) -> tuple[int, int]:
        """(offset, position) of the last entry at or before `offset`, else (base, 0)."""
        i = bisect.bisect_right(self.relative_offsets, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self.relative_offsets[i], self.positions[i]

    def truncate_to_position(self, position: int) -> None:
        """Drop entries at or after `position` in the log."""
        self._drop_from(bisect.bisect_left(self.positions, position))


class TimeIndex(_IndexFile):
    entry = _TIME_ENTRY

    def __init__(self, path: str, base_offset: int, max_index_size: int) -> None:
        super().__init__(path, base_offset, max_index_size)
        self.timestamps = array("q")
        self.relative_offsets = array("q")

    def _columns(self) -> tuple[array, array]:
        return self.timestamps, self.relative_offsets

    def load(self) -> None:
        data = self._read_file()
        ts, rel = array("q"), array("q")
        for t, r in _TIME_ENTRY.iter_unpack(data):
            if t == 0 and r == 0 and len(ts):
                break
            if len(ts) and (t < ts[-1] or r < rel[-1]):
                raise CorruptIndexError(f"{self.path}: entries do not increase at {t}")
            ts.append(t)
            rel.append(r)
        self.timestamps, self.relative_offsets = ts, rel

    @property
    def last_entry(self) -> tuple[int, int]:
        if not len(self.timestamps):
            return -1, self.base_offset
        return self.timestamps[-1], self.base_offset + self.relative_offsets[-1]

    def maybe_append(self, timestamp: int, offset: int) -> None:
        if len(self.timestamps) and timestamp <= self.timestamps[-1]:
            return
        self._add(timestamp, offset - self.base_offset)

    def lookup(self, timestamp: int) -> int:
        """The offset of the last entry whose timestamp is below `timestamp` (a safe place
        to start scanning for the first record at or after it), else the base offset."""
        i = bisect.bisect_left(self.timestamps, timestamp) - 1
        if i < 0:
            return self.base_offset
        return self.base_offset + self.relative_offsets[i]

    def truncate_to_offset(self, offset: int) -> None:
        """Drop entries for offsets at or after `offset`."""
        self._drop_from(bisect.bisect_left(self.relative_offsets, offset - self.base_offset))
