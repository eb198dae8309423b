"""The log cleaner's work on one log (Kafka's `Cleaner`): keep the latest record per key.

One round on one log, given by a `CleanRequest` (a snapshot the cleaner manager takes on the
event loop; see cleaner_manager.py):

1. **Key map.** Read the dirty part, from the first dirty offset (the cleaner checkpoint) up to
   the first uncleanable offset, and map each key to its last offset (`OffsetMap`). The map's
   memory is bounded by `log.cleaner.dedupe.buffer.size / log.cleaner.threads`; when it is
   full the round stops at the last whole batch that fitted, and the next round goes on from
   there. `end_offset` = (last offset mapped) + 1 becomes the new cleaner checkpoint.
2. **Copy.** Every closed segment from the log start below `end_offset` is rewritten, in
   groups of consecutive segments whose sum fits `segment.bytes` and whose index entries fit
   `segment.index.bytes` (so small cleaned segments merge). A record is kept when
   - its offset is above the map's last offset (not cleaned in this round), or
   - it has a key, no later offset of that key is in the map, and it is not a tombstone
     whose batch's delete horizon has passed.
   Keyless records (written before the topic became compacted) are dropped and counted, as
   Kafka's cleaner does (`invalid messages`), with a warning per round. Transactions
   (cleaned_transactions.py, from the `.txnindex` entries of the segments read): records of
   aborted transactions are not mapped (they must not hide the committed value of their
   key) and are all dropped, batch by batch without decoding; a COMMIT/ABORT marker stays
   while data of its transaction is left, then gets a delete horizon, and goes in a round
   after it; the cleaned segment's `.txnindex` keeps only the aborted transactions whose
   data is still there. The range never reaches the first unstable offset (an open
   transaction: the cleaner manager stops at the last stable offset). The last batch of
   each producer (producer state: its last data batch, or its marker when its state holds
   no data batch) is kept even when all its records go (as an empty batch: base and last
   offsets, sequence and epoch stay), so idempotent producers keep their sequence after a
   restart; so is the batch that ends at the first uncleanable offset, so the log keeps
   the offset it reached.
3. **Delete horizon.** A batch that keeps a tombstone, or a marker whose transaction has no
   data left, and has no delete horizon yet gets one: now + `delete.retention.ms`, in
   baseTimestamp with attribute bit 6 (KIP-534); its records' timestamp deltas are rebased
   on it. A later round drops the tombstones and the marker once now has passed the horizon.
4. **Swap.** A group's result is written to `<base>.log.cleaned` (with `.index.cleaned`,
   `.timeindex.cleaned` and, when it keeps aborted transactions, `.txnindex.cleaned`),
   fsynced, then handed to the log's owner (the event loop), which renames them `.swap`, renames the old segments `.deleted`, renames the `.swap` files to
   their final names and puts the new segment in the segment list
   (`PartitionLog.replace_segments`). Recovery after a crash at any of these steps:
   log/swap.py.

Batches are handled whole where possible: a batch whose records all stay is copied byte for
byte; an uncompressed batch that loses records is rebuilt from the raw bytes of the records
it keeps (only its header is written anew); only compressed batches that lose records are
decoded into records and encoded again (records.py).

Nothing here touches the live PartitionLog: the request holds paths and sizes; the files are
opened by this thread (so a segment deleted meanwhile stays readable here), and the owner
checks, when swapping, that the segments are still the ones cleaned.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import crc32c

from strom.clock import Clock
from strom.log.cleaned_transactions import (
    CleanedTransactionMetadata,
)
from strom.log.files import (
    CLEANED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    TXN_INDEX_SUFFIX,
    fsync_dir,
    segment_path,
)
from strom.log.index import OffsetIndex, TimeIndex
from strom.log.records import (
    Compression,
    CorruptRecordError,
    Record,
    build_batch,
    decode_records,
)
from strom.log.transaction_index import AbortedTxn
from strom.protocol.batch import HEADER_SIZE, BatchHeader, crc_is_valid, read_header

log = logging.getLogger(__name__)

# What one key costs in the map, beyond the key's own bytes: a dict slot, the int offset and
# the bytes object's header, in CPython (Kafka's SkimpyOffsetMap spends 24 bytes: an MD5
# hash and an offset; we keep the whole key, so a hash collision can never drop a record).
MAP_ENTRY_OVERHEAD = 96
# as Kafka's log.cleaner.io.buffer.load.factor: the map is "full" at 90% of its budget
MAP_LOAD_FACTOR = 0.9
# bytes read from a segment file at a time
READ_CHUNK = 1 << 20

_DELETE_HORIZON_BIT = 0x40
_AFTER_CRC = struct.Struct(">hiqqqhii")  # attributes .. recordsCount (header bytes 21-60)
_HEAD = struct.Struct(">qiib")  # baseOffset, batchLength, partitionLeaderEpoch, magic


class CleanerAborted(Exception):
    """The round stopped on purpose (shutdown, or the log changed under it)."""


# --- snapshot of the log, taken by the owner ---------------------------------------------

@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A closed segment as the owner saw it. `segment` is the live LogSegment object: only
    compared by identity, on the owner, when swapping."""

    base_offset: int
    log_path: str
    size: int
    next_offset: int
    largest_timestamp: int
    first_batch_timestamp: int | None
    index_entries: int
    time_index_entries: int
    segment: object = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CleanConfig:
    delete_retention_ms: int
    segment_bytes: int
    segment_index_bytes: int
    index_interval_bytes: int


@dataclass(frozen=True, slots=True)
class CleanRequest:
    """Kafka's LogToClean: one log's closed segments and the range to clean."""

    topic: str
    partition: int
    dir: str
    segments: tuple[SegmentInfo, ...]  # closed segments, oldest first
    first_dirty_offset: int
    first_uncleanable_offset: int
    config: CleanConfig
    last_batch_of_producer: dict[int, int]  # producer id -> last offset of its last batch
    clean_bytes: int = 0
    cleanable_bytes: int = 0
    need_compaction_now: bool = False
    truncations: int = 0  # the log's truncation count when the request was made
    log: object = field(default=None, compare=False, repr=False)  # the PartitionLog
    # the `.txnindex` entries of the closed segments below the first uncleanable offset
    # (all overlapping the offsets the cleaner reads), oldest first
    aborted_txns: tuple[AbortedTxn, ...] = ()
    # producer id -> epoch, for the producers whose state holds no data batch (their last
    # entry in the log is a marker, of that epoch: kept, for fencing)
    epoch_of_producer_without_data: dict[int, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.clean_bytes + self.cleanable_bytes

    @property
    def cleanable_ratio(self) -> float:
        return self.cleanable_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(slots=True)
class CleanerStats:
    bytes_read: int = 0
    bytes_written: int = 0
    map_bytes_read: int = 0
    map_records: int = 0
    records_read: int = 0
    records_written: int = 0
    invalid_records: int = 0  # keyless
    batches_copied: int = 0  # byte for byte
    batches_rebuilt: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)


@dataclass(frozen=True, slots=True)
class CleanResult:
    end_offset: int  # the new cleaner checkpoint
    stats: CleanerStats
    groups: int


# --- the key map -------------------------------------------------------------------------

class OffsetMap:
    """key -> latest offset, bounded in memory (see MAP_ENTRY_OVERHEAD)."""

    def __init__(self, memory_bytes: int) -> None:
        self.limit = int(memory_bytes * MAP_LOAD_FACTOR)
        self.used = 0
        self.map: dict[bytes, int] = {}
        self.latest_offset = -1

    def __len__(self) -> int:
        return len(self.map)

    def fits(self, cost: int) -> bool:
        return self.used + cost <= self.limit

    def put(self, key: bytes, offset: int) -> None:
        if key not in self.map:
            self.used += len(key) + MAP_ENTRY_OVERHEAD
        self.map[key] = offset

    def get(self, key: bytes) -> int:
        return self.map.get(key, -1)


# --- throttling ----------------------------------------------------------------------------

class Throttler:
    """Bounds the cleaners' IO to `rate` bytes/s (log.cleaner.io.max.bytes.per.second), shared
    by the cleaner threads as Kafka's. `wait` sleeps (an Event.wait, so shutdown cuts it)."""

    CHECK_INTERVAL = 0.3

    def __init__(self, rate: float, wait: Callable[[float], object] = time.sleep,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.wait = wait
        self.now = now
        self._lock = threading.Lock()
        self._period_start = now()
        self._bytes = 0

    def maybe_throttle(self, nbytes: int) -> None:
        if self.rate <= 0 or self.rate >= 1e300:
            return
        with self._lock:
            self._bytes += nbytes
            now = self.now()
            elapsed = now - self._period_start
            if elapsed < self.CHECK_INTERVAL:
                return
            sleep = self._bytes / self.rate - elapsed
            self._period_start = now
            self._bytes = 0
        if sleep > 0:
            self.wait(sleep)


# --- record scanning (no Record objects) ---------------------------------------------------

def _varint(data, pos: int) -> tuple[int, int]:
    raw = shift = 0
    while True:
        b = data[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        if b < 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptRecordError("varint too long")


def _write_varint(out: bytearray, value: int) -> None:
    z = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


# (start, body start, timestamp-delta end, end, offset, timestamp, key, is tombstone)
RawRecord = tuple[int, int, int, int, int, int, "bytes | None", bool]


def scan_records(body, header: BatchHeader) -> Iterator[RawRecord]:
    """The records of an uncompressed records area, as positions and the few fields the
    cleaner needs. Raises CorruptRecordError on malformed records. (One-byte varints, the
    common case, are read inline.)"""
    body = bytes(body)
    varint = _varint
    base_offset = header.base_offset
    base_ts = header.base_timestamp
    end = len(body)
    pos = 0
    try:
        for _ in range(header.records_count):
            start = pos
            b = body[pos]
            if b < 0x80:
                length, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                length, pos = varint(body, pos)
            rec_start = pos
            rec_end = pos + length
            if length <= 0 or rec_end > end:
                raise CorruptRecordError("record overruns its batch")
            b = body[pos + 1]  # after the attributes byte
            if b < 0x80:
                ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                ts_delta, pos = varint(body, pos + 1)
            ts_end = pos
            b = body[pos]
            if b < 0x80:
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                offset_delta, pos = varint(body, pos)
            b = body[pos]
            if b < 0x80:
                key_len, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                key_len, pos = varint(body, pos)
            if key_len >= 0:
                key = body[pos:pos + key_len]
                pos += key_len
            else:
                key = None
            b = body[pos]
            if b < 0x80:
                value_len, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                value_len, pos = varint(body, pos)
            if pos > rec_end:
                raise CorruptRecordError("record fields overrun the record")
            yield (start, rec_start, ts_end, rec_end, base_offset + offset_delta,
                   base_ts + ts_delta, key, value_len < 0)
            pos = rec_end
    except IndexError:
        raise CorruptRecordError("truncated record") from None
    if pos != end:
        raise CorruptRecordError(f"{end - pos} bytes after the last record of the batch")


def _batch_bytes(header_fields: BatchHeader, attributes: int, base_timestamp: int,
                 max_timestamp: int, records_count: int, body: bytes | bytearray) -> bytes:
    """A v2 batch with `header_fields`' offsets, producer and leader epoch, the given
    attributes/timestamps/count and `body` as its (already encoded) records area."""
    tail = _AFTER_CRC.pack(attributes, header_fields.last_offset_delta, base_timestamp,
                           max_timestamp, header_fields.producer_id,
                           header_fields.producer_epoch, header_fields.base_sequence,
                           records_count)
    crc = crc32c.crc32c(body, crc32c.crc32c(tail))
    head = _HEAD.pack(header_fields.base_offset, HEADER_SIZE - 12 + len(body),
                      header_fields.partition_leader_epoch, 2)
    return b"".join((head, struct.pack(">I", crc), tail, body))


# --- reading segment files -------------------------------------------------------------

class _SegmentReader:
    """The batches of one segment file, read by this thread through its own descriptor."""

    def __init__(self, info: SegmentInfo, throttler: Throttler, stop: threading.Event,
                 stats: CleanerStats) -> None:
        self.info = info
        self.throttler = throttler
        self.stop = stop
        self.stats = stats

    def batches(self) -> Iterator[tuple[BatchHeader, memoryview]]:
        try:
            fd = os.open(self.info.log_path, os.O_RDONLY)
        except FileNotFoundError:
            raise CleanerAborted(f"{self.info.log_path} is gone") from None
        try:
            size = self.info.size
            position = 0
            buf = b""
            buf_start = 0
            while position < size:
                if self.stop.is_set():
                    raise CleanerAborted("shutting down")
                rel = position - buf_start
                if len(buf) - rel < HEADER_SIZE:
                    buf = os.pread(fd, max(READ_CHUNK, HEADER_SIZE), position)
                    buf_start, rel = position, 0
                    self._account(len(buf))
                header = read_header(buf, rel)
                if header.size > size - position:
                    raise CorruptRecordError(f"{self.info.log_path}: torn batch at {position}")
                if len(buf) - rel < header.size:
                    buf = os.pread(fd, max(READ_CHUNK, header.size), position)
                    buf_start, rel = position, 0
                    self._account(len(buf))
                view = memoryview(buf)[rel:rel + header.size]
                yield header, view
                position += header.size
        finally:
            os.close(fd)

    def _account(self, n: int) -> None:
        self.stats.bytes_read += n
        self.throttler.maybe_throttle(n)


# --- writing the cleaned segment ---------------------------------------------------------

class CleanedSegmentWriter:
    """`<base>.log.cleaned` with its offset and time indexes (same entries LogSegment would
    make: one per `index.interval.bytes`, plus the final time index entry), and its
    `.txnindex.cleaned` when it keeps aborted transactions."""

    def __init__(self, dir_: str, base_offset: int, config: CleanConfig) -> None:
        self.base_offset = base_offset
        self.log_path = segment_path(dir_, base_offset, LOG_SUFFIX) + CLEANED_SUFFIX
        self.index = OffsetIndex(segment_path(dir_, base_offset, INDEX_SUFFIX) + CLEANED_SUFFIX,
                                 base_offset, config.segment_index_bytes)
        self.time_index = TimeIndex(
            segment_path(dir_, base_offset, TIME_INDEX_SUFFIX) + CLEANED_SUFFIX, base_offset,
            config.segment_index_bytes)
        self.txn_index_path = segment_path(dir_, base_offset, TXN_INDEX_SUFFIX) + CLEANED_SUFFIX
        self.interval = config.index_interval_bytes
        self.aborted_txns: list[AbortedTxn] = []  # filled as its ABORT markers are copied
        for path in self.paths:
            if os.path.exists(path):
                os.unlink(path)
        self.fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0
        self.since_index = 0
        self.max_timestamp = -1
        self.offset_of_max = base_offset
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    @property
    def paths(self) -> tuple[str, str, str, str]:
        return self.log_path, self.index.path, self.time_index.path, self.txn_index_path

    def append(self, data: bytes | memoryview, last_offset: int, max_timestamp: int) -> None:
        if max_timestamp > self.max_timestamp:
            self.max_timestamp, self.offset_of_max = max_timestamp, last_offset
        if self.since_index > self.interval:
            self.index.append(last_offset, self.size)
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max)
            self.since_index = 0
        self.since_index += len(data)
        self.size += len(data)
        self._pending.append(bytes(data))
        self._pending_bytes += len(data)
        if self._pending_bytes >= READ_CHUNK:
            self._write_pending()

    def _write_pending(self) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def finish(self) -> None:
        """Write out, add the final time index entry, write the `.txnindex` of the aborted
        transactions it keeps (`aborted_txns`; none: no file), fsync all the files."""
        if self.aborted_txns:
            with open(self.txn_index_path, "wb") as f:
                f.write(b"".join(t.encode() for t in self.aborted_txns))
                f.flush()
                os.fsync(f.fileno())
        self._write_pending()
        if self.max_timestamp >= 0:
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max)
        for idx in (self.index, self.time_index):
            open(idx.path, "ab").close()  # present even without entries
            idx.flush()
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        self.index.fsync_file()
        self.time_index.fsync_file()

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        for path in self.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


# --- grouping --------------------------------------------------------------------------------

def group_segments_by_size(segments: Sequence[SegmentInfo], max_size: int,
                           max_index_bytes: int) -> list[list[SegmentInfo]]:
    """Kafka's groupSegmentsBySize: consecutive segments while their sizes fit `max_size`,
    their offset and time index entries fit `max_index_bytes`, and offsets stay within
    int32 of the group's base."""
    groups: list[list[SegmentInfo]] = []
    i = 0
    while i < len(segments):
        group = [segments[i]]
        size = segments[i].size
        index_bytes = segments[i].index_entries * 8
        time_bytes = segments[i].time_index_entries * 12
        i += 1
        while i < len(segments):
            s = segments[i]
            if size + s.size > max_size or index_bytes + s.index_entries * 8 > max_index_bytes \
                    or time_bytes + s.time_index_entries * 12 > max_index_bytes \
                    or s.next_offset - 1 - group[0].base_offset > (1 << 31) - 1:
                break
            group.append(s)
            size += s.size
            index_bytes += s.index_entries * 8
            time_bytes += s.time_index_entries * 12
            i += 1
        groups.append(group)
    return groups


# --- the cleaner ---------------------------------------------------------------------------

# swap(request, old segments, base offset of the cleaned segment) -> True if swapped, run on
# the owner of the log
SwapFn = Callable[[CleanRequest, list[SegmentInfo], int], bool]


class Cleaner:
    def __init__(self, clock: Clock, map_memory: int, throttler: Throttler | None = None,
                 stop: threading.Event | None = None) -> None:
        self.clock = clock
        self.map_memory = map_memory
        self.throttler = throttler or Throttler(0)
        self.stop = stop or threading.Event()

    def clean(self, req: CleanRequest, swap: SwapFn) -> CleanResult:
        stats = CleanerStats()
        now = self.clock.now_ms()
        offset_map = OffsetMap(self.map_memory)
        self.build_offset_map(req, offset_map, stats)
        end_offset = offset_map.latest_offset + 1
        if end_offset <= req.first_dirty_offset:
            return CleanResult(req.first_dirty_offset, stats, 0)
        to_clean = [s for s in req.segments if s.base_offset < end_offset]
        groups = group_segments_by_size(to_clean, req.config.segment_bytes,
                                        req.config.segment_index_bytes)
        txns = CleanedTransactionMetadata(req.aborted_txns)
        for group in groups:
            self.clean_group(req, group, offset_map, now, stats, swap, txns)
        if stats.invalid_records:
            log.warning("Cleaner removed %d records without a key from %s-%d (a compacted "
                        "topic needs keys)", stats.invalid_records, req.topic, req.partition)
        return CleanResult(end_offset, stats, len(groups))

    # --- 1. the key map --------------------------------------------------------------
    def build_offset_map(self, req: CleanRequest, offset_map: OffsetMap,
                         stats: CleanerStats) -> None:
        start = req.first_dirty_offset
        end = req.first_uncleanable_offset
        segments = [s for s in req.segments if s.base_offset < end and s.next_offset > start]
        # transactions aborted before the first dirty offset must not make their producer's
        # later batches look aborted
        txns = CleanedTransactionMetadata(t for t in req.aborted_txns if t.last_offset >= start)
        for k, info in enumerate(segments):
            for header, view in _SegmentReader(info, self.throttler, self.stop,
                                               stats).batches():
                if header.base_offset >= req.first_uncleanable_offset:
                    return
                if header.last_offset < start:
                    continue
                stats.map_bytes_read += header.size
                if header.is_control:
                    txns.on_control_batch_read(header, _control_type(header, view))
                    offset_map.latest_offset = header.last_offset
                    continue
                if txns.on_batch_read(header):  # aborted: must not hide a committed value
                    offset_map.latest_offset = header.last_offset
                    continue
                keys = [(key, offset) for offset, key in self._keys(header, view)
                        if key is not None and offset >= start]
                cost = sum(len(key) + MAP_ENTRY_OVERHEAD for key, _ in keys
                           if key not in offset_map.map)
                if not offset_map.fits(cost):
                    if offset_map.latest_offset < start:
                        raise ValueError(
                            f"log.cleaner.dedupe.buffer.size is too small to map one batch "
                            f"of {req.topic}-{req.partition} at offset {header.base_offset}")
                    return
                for key, offset in keys:
                    offset_map.put(key, offset)
                stats.map_records += len(keys)
                offset_map.latest_offset = header.last_offset
            # as Kafka: a segment mapped whole covers the offsets up to the next one (gaps)
            next_base = segments[k + 1].base_offset if k + 1 < len(segments) else end
            offset_map.latest_offset = max(offset_map.latest_offset, min(next_base, end) - 1)

    def _keys(self, header: BatchHeader, view: memoryview) -> Iterator[tuple[int, bytes | None]]:
        if not crc_is_valid(view, 0, header):
            raise CorruptRecordError(f"CRC mismatch in the batch at offset {header.base_offset}")
        if header.compression == 0:
            for rec in scan_records(view[HEADER_SIZE:], header):
                yield rec[4], rec[6]
        else:
            for r in decode_records(view, 0, verify_crc=False):
                yield r.offset, r.key

    # --- 2. copying --------------------------------------------------------------------
    def clean_group(self, req: CleanRequest, group: list[SegmentInfo], offset_map: OffsetMap,
                    now: int, stats: CleanerStats, swap: SwapFn,
                    txns: CleanedTransactionMetadata) -> None:
        writer = CleanedSegmentWriter(req.dir, group[0].base_offset, req.config)
        txns.retained_entries = writer.aborted_txns
        try:
            for info in group:
                for header, view in _SegmentReader(info, self.throttler, self.stop,
                                                   stats).batches():
                    out = self.filter_batch(req, header, view, offset_map, now, stats, txns)
                    if out is not None:
                        data, max_ts = out
                        writer.append(data, header.last_offset, max_ts)
                        stats.bytes_written += len(data)
                        self.throttler.maybe_throttle(len(data))
            writer.finish()
        except Exception:  # not on a simulated crash (tests)
            writer.discard()
            raise
        fsync_dir(req.dir)
        try:
            swapped = swap(req, group, group[0].base_offset)
        except Exception:  # not on a simulated crash (tests)
            writer.discard()
            raise
        if not swapped:
            writer.discard()
            raise CleanerAborted(f"{req.topic}-{req.partition} changed while cleaning")
        fsync_dir(req.dir)

    def filter_batch(self, req: CleanRequest, header: BatchHeader, view: memoryview,
                     offset_map: OffsetMap, now: int, stats: CleanerStats,
                     txns: CleanedTransactionMetadata
                     ) -> tuple[bytes | memoryview, int] | None:
        """The batch as it goes to the cleaned segment, with its max timestamp; None to drop
        it."""
        # kept even when empty (as Kafka): the last batch of a producer (its sequence and
        # epoch), and the last batch of the round (the offset it reached)
        keep_empty = header.last_offset + 1 == req.first_uncleanable_offset or \
            _is_last_of_producer(req, header)
        has_horizon = bool(header.attributes & _DELETE_HORIZON_BIT)
        if header.is_control:
            return self._filter_control(req, header, view, now, stats, txns, keep_empty)
        if txns.on_batch_read(header):
            # aborted data: every record goes, undecoded (as Kafka, whatever its offset)
            stats.records_read += header.records_count
            if not keep_empty:
                return None
            stats.batches_rebuilt += 1
            return _empty_batch(header)
        if not crc_is_valid(view, 0, header):
            raise CorruptRecordError(f"CRC mismatch in the batch at offset {header.base_offset}")
        latest = offset_map.latest_offset
        horizon_passed = has_horizon and now >= header.base_timestamp
        compressed = header.compression != 0
        if compressed:
            records: Sequence = decode_records(view, 0, verify_crc=False)
            items = [(r.offset, r.key, r.value is None) for r in records]
        else:
            records = list(scan_records(view[HEADER_SIZE:], header))
            items = [(r[4], r[6], r[7]) for r in records]
        keep: list[int] = []
        tombstone_kept = False
        for i, (offset, key, tombstone) in enumerate(items):
            stats.records_read += 1
            if offset > latest:
                keep.append(i)
                tombstone_kept |= tombstone
                continue
            if key is None:
                stats.invalid_records += 1
                continue
            if offset < offset_map.get(key):
                continue
            if tombstone and horizon_passed:
                continue
            keep.append(i)
            tombstone_kept |= tombstone
        stats.records_written += len(keep)
        set_horizon = tombstone_kept and not has_horizon
        if not keep and not keep_empty:
            return None  # an empty batch too, once its producer has moved on (as Kafka)
        if len(keep) == len(items) and not set_horizon:
            stats.batches_copied += 1
            return view, header.max_timestamp
        stats.batches_rebuilt += 1
        horizon = now + req.config.delete_retention_ms if set_horizon else None
        if compressed:
            return self._rebuild_decoded(header, [records[i] for i in keep], horizon)
        return self._rebuild_raw(header, view[HEADER_SIZE:], [records[i] for i in keep],
                                 horizon)

    def _filter_control(self, req: CleanRequest, header: BatchHeader, view: memoryview,
                        now: int, stats: CleanerStats, txns: CleanedTransactionMetadata,
                        keep_empty: bool) -> tuple[bytes | memoryview, int] | None:
        """A transaction marker: removed once no data of its transaction is left and its
        delete horizon has passed; given a horizon (now + delete.retention.ms) on the first
        round that finds it removable (cleaned_transactions.py)."""
        stats.records_read += header.records_count
        removable = txns.on_control_batch_read(header, _control_type(header, view))
        has_horizon = bool(header.attributes & _DELETE_HORIZON_BIT)
        if not header.records_count:  # emptied before: its header stays only when needed
            if not keep_empty:
                return None
            stats.batches_copied += 1
            return view, header.max_timestamp
        if removable and has_horizon and now >= header.base_timestamp:
            if not keep_empty:
                return None
            stats.batches_rebuilt += 1
            return _empty_batch(header)
        stats.records_written += header.records_count
        if not removable or has_horizon or header.compression:
            stats.batches_copied += 1
            return view, header.max_timestamp
        if not crc_is_valid(view, 0, header):
            raise CorruptRecordError(f"CRC mismatch in the batch at offset {header.base_offset}")
        stats.batches_rebuilt += 1
        return self._rebuild_raw(header, view[HEADER_SIZE:],
                                 list(scan_records(view[HEADER_SIZE:], header)),
                                 now + req.config.delete_retention_ms)

    def _rebuild_raw(self, header: BatchHeader, body: memoryview, kept: list[RawRecord],
                     horizon: int | None) -> tuple[bytes, int]:
        """An uncompressed batch of the kept records' bytes (timestamp deltas rebased when a
        delete horizon is set)."""
        log_append = header.is_log_append_time
        max_ts = header.max_timestamp if log_append else \
            max((r[5] for r in kept), default=header.max_timestamp)
        attributes = header.attributes
        base_ts = header.base_timestamp
        if horizon is None:
            out = b"".join(body[r[0]:r[3]] for r in kept)
        else:
            attributes |= _DELETE_HORIZON_BIT
            base_ts = horizon
            buf = bytearray()
            rec = bytearray()
            for _start, rec_start, ts_end, rec_end, _o, ts, _k, _t in kept:
                rec.clear()
                rec.append(body[rec_start])
                _write_varint(rec, ts - horizon)
                rec += body[ts_end:rec_end]
                _write_varint(buf, len(rec))
                buf += rec
            out = bytes(buf)
        return _batch_bytes(header, attributes, base_ts, max_ts, len(kept), out), max_ts

    def _rebuild_decoded(self, header: BatchHeader, kept: list[Record], horizon: int | None
                         ) -> tuple[bytes, int]:
        if header.attributes & _DELETE_HORIZON_BIT:
            horizon = header.base_timestamp
        log_append = header.is_log_append_time
        max_ts = header.max_timestamp if log_append else \
            max((r.timestamp for r in kept), default=header.max_timestamp)
        if not kept:
            # as Kafka's empty batch header: no codec for no records
            return _batch_bytes(header, header.attributes & ~0x07, header.base_timestamp,
                                max_ts, 0, b""), max_ts
        data = build_batch(
            kept, base_offset=header.base_offset, compression=Compression(header.compression),
            producer_id=header.producer_id, producer_epoch=header.producer_epoch,
            base_sequence=header.base_sequence, timestamp_type=1 if log_append else 0,
            is_transactional=header.is_transactional, is_control=False,
            partition_leader_epoch=header.partition_leader_epoch,
            max_timestamp=max_ts, last_offset_delta=header.last_offset_delta,
            delete_horizon_ms=horizon)
        return data, max_ts


def _is_last_of_producer(req: CleanRequest, header: BatchHeader) -> bool:
    """Whether the batch holds its producer's state (Kafka's isBatchLastRecordOfProducer):
    the producer's last data batch, or, for a producer whose state has no data batch, a
    marker of its current epoch."""
    pid = header.producer_id
    if pid < 0:
        return False
    last = req.last_batch_of_producer.get(pid)
    if last is not None:
        return header.last_offset == last
    return header.is_control and \
        req.epoch_of_producer_without_data.get(pid) == header.producer_epoch


def _empty_batch(header: BatchHeader) -> tuple[bytes, int]:
    """The batch's header with no records (offsets, producer, sequence and epoch kept; no
    codec for no records), as Kafka's writeEmptyHeader."""
    return _batch_bytes(header, header.attributes & ~0x07, header.base_timestamp,
                        header.max_timestamp, 0, b""), header.max_timestamp


def _control_type(header: BatchHeader, view: memoryview) -> int | None:
    """The type of a control batch's record (ABORT 0, COMMIT 1, ...), None when it has no
    record; -1 when it cannot be read (kept, as Kafka keeps an unknown type)."""
    if header.records_count == 0:
        return None
    try:
        if header.compression == 0:
            key = next(scan_records(view[HEADER_SIZE:], header))[6]
        else:
            key = decode_records(view, 0, verify_crc=False)[0].key
    except (CorruptRecordError, StopIteration, IndexError, ValueError):
        return -1
    if key is None or len(key) < 4:
        return -1
    return struct.unpack_from(">h", key, 2)[0]
