"""PartitionLog: the segments of one partition replica, and everything offsets mean there.

    log start offset <= last stable offset <= high watermark <= log end offset
    |-- closed segments --|-- active segment --|

Appends go to the active segment, which rolls on `segment.bytes`, `segment.ms`, a full
index, or a relative offset that would overflow. Retention deletes whole closed segments
and moves the log start offset.

Transactions: producer state (producer_state.py) tracks each producer's open transaction;
the last stable offset (LSO) is where read_committed consumers stop. A COMMIT/ABORT marker
(a control batch, `append_marker` as leader, or replicated/loaded like any batch) ends a
transaction; an aborted one gets an entry in the `.txnindex` of the segment holding its
marker (transaction_index.py), which read_committed Fetch collects (`collect_aborted_txns`).
Producer state is snapshotted (`<offset>.snapshot`, producer_snapshot.py) at every roll and
on close; loading starts from the latest snapshot and replays the batches after it, so a
restart, clean or after kill -9, rebuilds the exact state from little data. The leader epoch cache maps each leader epoch to its first
offset (leader-epoch-checkpoint). Owned by the broker's event loop; blocking fsyncs are
handed to an executor by the LogManager.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import errno
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from strom.clock import Clock
from strom.config import TopicConfig
from strom.log import checkpoint, files, producer_snapshot, swap
from strom.log.page_cache import PageCacheWindow
from strom.log.producer_state import BatchMetadata, CompletedTxn, ProducerStateManager
from strom.log.segment import NO_WINDOW, CorruptBatch, FileSlice, LogSegment
from strom.log.transaction_index import AbortedTxn, TransactionIndex
from strom.protocol.batch import (
    BatchHeader,
    InvalidBatch,
    assign_offsets,
    read_header,
    set_log_append_time,
)
from strom.protocol.errors import (
    CorruptMessage,
    KafkaError,
    KafkaStorageError,
    OffsetOutOfRange,
)
from strom.tasks import off_loop

log = logging.getLogger(__name__)

INT32_MAX = (1 << 31) - 1
# how many closed segments' batch headers are read on load to rebuild producer state
PRODUCER_STATE_SEGMENTS = 2


@dataclass(slots=True)
class AppendResult:
    base_offset: int
    last_offset: int
    log_append_time: int  # -1 for CreateTime
    duplicate: bool = False


@dataclass(slots=True)
class ReadResult:
    slice: FileSlice | None
    log_start_offset: int
    log_end_offset: int


def _batch_size(seg: LogSegment, position: int) -> int:
    from strom.protocol.batch import HEADER_SIZE, read_header

    return read_header(seg.read_bytes(position, HEADER_SIZE)).size


class PartitionLog:
    def __init__(self, dir_: str, topic: str, partition: int, config: TopicConfig,
                 clock: Clock, topic_id: uuid.UUID | None = None,
                 page_cache: PageCacheWindow = NO_WINDOW) -> None:
        self.dir = dir_
        self.topic = topic
        self.partition = partition
        self.config = config
        self.clock = clock
        self.topic_id = topic_id
        self.page_cache = page_cache
        self.segments: list[LogSegment] = []
        self._base_offsets: list[int] = []
        self.log_start_offset = 0
        self._high_watermark = 0
        self.recovery_point = 0
        self.leader_epochs: list[tuple[int, int]] = []  # (epoch, start offset), increasing
        self._epoch_file = checkpoint.LeaderEpochFile(
            os.path.join(dir_, files.LEADER_EPOCH_CHECKPOINT))
        self._epoch_writes: set[asyncio.Task] = set()
        self.producer_state = ProducerStateManager()
        self._txn_indexes: dict[int, TransactionIndex] = {}  # segment base offset ->
        self._has_snapshots = False
        # snapshots written at a roll, fsynced by the next flush (see take_snapshot)
        self._unsynced_snapshots: collections.deque[str] = collections.deque()
        self.unflushed_messages = 0
        self.last_flush_ms = clock.now_ms()
        self.deleted = False
        self._retired: list[LogSegment] = []
        self._flush_after_roll = False
        self._read_failures_logged: set[tuple[str, int | str]] = set()
        # KIP-112: the LogManager takes this log's dir offline when a write in it fails
        # (`on_dir_failure`); an offline log refuses appends and reads until a restart
        self.on_dir_failure: Callable[[OSError], None] | None = None
        self.offline = False
        # truncations so far: a cleaner's swap, or a flush's move of the recovery point, is
        # refused after one (see cleaner_manager.py, `flushed`)
        self.truncations = 0
        self._flush_starts: dict[int, int] = {}  # end offset -> truncations at start_flush

    # --- loading --------------------------------------------------------------------
    @classmethod
    def open(cls, dir_: str, topic: str, partition: int, config: TopicConfig, clock: Clock,
             topic_id: uuid.UUID | None = None, recovery_point: int = 0,
             log_start_offset: int = 0, high_watermark: int = 0,
             needs_recovery: bool = False,
             page_cache: PageCacheWindow = NO_WINDOW) -> PartitionLog:
        os.makedirs(dir_, exist_ok=True)
        self = cls(dir_, topic, partition, config, clock, topic_id, page_cache)
        stored_id = checkpoint.read_partition_metadata(
            os.path.join(dir_, files.PARTITION_METADATA))
        if topic_id is not None and stored_id != topic_id:
            checkpoint.write_partition_metadata(
                os.path.join(dir_, files.PARTITION_METADATA), topic_id)
        elif topic_id is None:
            self.topic_id = stored_id
        recovered_from = self._load_segments(recovery_point, needs_recovery)
        self.leader_epochs = checkpoint.read_leader_epochs(
            os.path.join(dir_, files.LEADER_EPOCH_CHECKPOINT))
        if recovered_from is not None:
            self._rebuild_leader_epochs_from(recovered_from)
        self.log_start_offset = max(log_start_offset, self.segments[0].base_offset)
        if self.log_start_offset > self.log_end_offset:
            self.log_start_offset = self.segments[0].base_offset
        self.recovery_point = self.log_end_offset
        self.high_watermark = min(max(high_watermark, self.log_start_offset),
                                  self.log_end_offset)
        self._truncate_leader_epochs_after(self.log_end_offset)
        self._load_producer_state()
        return self

    def _load_segments(self, recovery_point: int, needs_recovery: bool) -> int | None:
        """Open (and after a crash, recover) the segments; returns the base offset of the
        first recovered segment, if any was."""
        recovered_from: int | None = None
        base_offsets = []
        swap.recover_swaps(self.dir)  # finishes or undoes a cleaner's interrupted swap
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.endswith((files.DELETED_SUFFIX, files.CLEANED_SUFFIX, ".tmp")):
                os.unlink(path)
            elif name.endswith(files.SWAP_SUFFIX):
                log.warning("Removing leftover swap file %s", path)
                os.unlink(path)
            elif name.endswith(files.LOG_SUFFIX):
                try:
                    base_offsets.append(files.offset_from_filename(name))
                except ValueError:
                    log.warning("Ignoring unexpected file %s", path)
        for name in os.listdir(self.dir):  # index files without a log file are stale
            if name.endswith((files.INDEX_SUFFIX, files.TIME_INDEX_SUFFIX,
                              files.TXN_INDEX_SUFFIX)):
                try:
                    base = files.offset_from_filename(name)
                except ValueError:
                    continue
                if base not in base_offsets:
                    os.unlink(os.path.join(self.dir, name))
        base_offsets.sort()
        now = self.clock.now_ms()
        truncated_at: int | None = None
        unflushed = sum(1 for i, b in enumerate(base_offsets) if needs_recovery and (
            i == len(base_offsets) - 1 or base_offsets[i + 1] > recovery_point))
        recovering = 0
        for i, base in enumerate(base_offsets):
            if truncated_at is not None:  # everything after a corrupt segment goes
                seg = self._new_segment(base, now, create=False)
                log.warning("Deleting segment %s after a corrupt one", seg.log_path)
                seg.delete()
                continue
            seg = self._new_segment(base, now, create=False)
            is_last = i == len(base_offsets) - 1
            next_base = base_offsets[i + 1] if not is_last else None
            if needs_recovery and (is_last or next_base is None or next_base > recovery_point):
                recovering += 1
                if unflushed > 1:  # one segment (the usual case) needs no progress
                    log.info("Recovering unflushed segment %d of %s-%d (%d/%d, %d%%)", base,
                             self.topic, self.partition, recovering, unflushed,
                             100 * (recovering - 1) // unflushed)
                truncated = seg.recover(max_batch_size=self._max_batch_on_disk(),
                                        limit_offset=next_base)
                if recovered_from is None:
                    recovered_from = base
                seg.fsync()  # what recovery kept is durable before the recovery point moves
                if truncated:
                    log.warning("Recovered %s: truncated %d invalid bytes", seg.log_path,
                                truncated)
                    truncated_at = seg.next_offset
            else:
                seg.load_indexes()
            if seg.size == 0 and not is_last and truncated_at is None:
                # an empty closed segment holds nothing; keep offsets contiguous anyway
                pass
            self.segments.append(seg)
        if not self.segments:
            self.segments.append(self._new_segment(0, now, create=True))
        self._base_offsets = [s.base_offset for s in self.segments]
        # Consecutive segments must not overlap: if a segment is empty its next offset is
        # its base offset.
        for seg in self.segments:
            if seg.next_offset < seg.base_offset:
                seg.next_offset = seg.base_offset
        return recovered_from

    def _rebuild_leader_epochs_from(self, offset: int) -> None:
        """After recovery, as Kafka's LogSegment.recover: the epochs of the recovered
        batches come from their headers. The checkpoint is written off the loop, so the
        entries at and after the recovered offsets may be missing or stale in it; only
        what was flushed (below the recovery point) is sure to be there."""
        self.leader_epochs = [(e, o) for e, o in self.leader_epochs if o < offset]
        for seg in self.segments:
            if seg.next_offset <= offset:
                continue
            try:
                for bp in seg.batches():
                    h = bp.header
                    if h.base_offset >= offset and h.partition_leader_epoch >= 0 and (
                            not self.leader_epochs
                            or h.partition_leader_epoch > self.leader_epochs[-1][0]):
                        self.leader_epochs.append((h.partition_leader_epoch, h.base_offset))
            except InvalidBatch as e:
                log.warning("%s: stopped reading leader epochs: %s", seg.log_path, e)
        self._write_leader_epochs()

    def _max_batch_on_disk(self) -> int:
        return max(self.config.get("max.message.bytes"), 1 << 20) * 2 + 1024

    def _new_segment(self, base_offset: int, now_ms: int, create: bool) -> LogSegment:
        return LogSegment(self.dir, base_offset, self.config.get("index.interval.bytes"),
                          self.config.get("segment.index.bytes"), now_ms, create=create,
                          page_cache=self.page_cache)

    def _load_producer_state(self) -> None:
        """Producer state as of the log end offset: the latest valid snapshot at or below
        it, then the batches after it replayed (markers rewrite their `.txnindex` entries).
        Without a snapshot (a log written before snapshots existed) the batches of the last
        PRODUCER_STATE_SEGMENTS + 1 segments are replayed. Snapshots past the log end
        (truncation) or below the first segment are deleted."""
        self.producer_state.clear()
        end = self.log_end_offset
        start: int | None = None
        for offset, path in reversed(self._snapshot_files()):
            if offset > end or offset < self.segments[0].base_offset:
                _unlink(path)
                continue
            if start is not None:
                continue
            try:
                with open(path, "rb") as f:
                    entries = producer_snapshot.decode(f.read())
            except (OSError, producer_snapshot.CorruptSnapshot) as e:
                log.warning("Ignoring producer-state snapshot %s: %s", path, e)
                _unlink(path)
                continue
            self._has_snapshots = True
            self.producer_state.load_snapshot(
                entries, self.clock.now_ms(),
                self.config.broker.get("producer.id.expiration.ms"))
            start = offset
        if start is None:
            first = self.segments[-PRODUCER_STATE_SEGMENTS - 1:][0]
            start = first.base_offset
        i = self._segment_for(start)
        for seg in self.segments[i:]:
            self.txn_index(seg).truncate_to(start)
        for seg in self.segments[i:]:
            if seg.next_offset <= start:
                continue
            try:
                first = seg.find_batch(start)  # through the index: no scan before `start`
                if first is None:
                    continue
                for bp in seg.batches(first.position):
                    h = bp.header
                    if h.base_offset >= start and h.producer_id >= 0:
                        data = seg.read_bytes(bp.position, h.size) if h.is_control else b""
                        self._apply_to_producer_state(seg, h, data)
            except InvalidBatch as e:
                log.warning("%s: stopped reading producer state: %s", seg.log_path, e)
        self.producer_state.on_high_watermark(self._high_watermark)
        self.remove_expired_producers()

    def _snapshot_files(self) -> list[tuple[int, str]]:
        """(offset, path) of the producer-state snapshots, by offset."""
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(files.SNAPSHOT_SUFFIX):
                try:
                    out.append((files.offset_from_filename(name),
                                os.path.join(self.dir, name)))
                except ValueError:
                    continue
        return sorted(out)

    def take_snapshot(self, sync: bool = True) -> None:
        """Write `<log end offset>.snapshot` (at a roll, on close), forced to disk as
        Kafka's: with `sync` (close) the file is fsynced before it is renamed into place and
        the directory after, so a crash leaves the previous snapshot or this one, whole; at
        a roll (not `sync`, on the loop) both fsyncs wait for the next flush, which runs
        off the loop (`fsync_segments`), as Kafka defers them to its flush after a roll (a
        torn snapshot fails its CRC on load, and an older one, or the log, is used). A log
        that never had producers writes none (Kafka writes empty ones too), so plain logs
        keep their file set; once one exists, every roll writes one."""
        if not self.producer_state.producers and not self._has_snapshots:
            return
        self._has_snapshots = True
        path = files.segment_path(self.dir, self.log_end_offset, files.SNAPSHOT_SUFFIX)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(producer_snapshot.encode(self.producer_state.snapshot_entries()))
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if sync:
            files.fsync_dir(self.dir)
        else:
            self._unsynced_snapshots.append(path)

    def _delete_snapshots_below(self, offset: int) -> None:
        """Snapshots below the first segment go with the segments (Kafka keeps none for
        data that is gone)."""
        for snap_offset, path in self._snapshot_files():
            if snap_offset < offset:
                _unlink(path)

    def txn_index(self, seg: LogSegment) -> TransactionIndex:
        """The segment's `.txnindex`, read on first use (segments replaced or deleted drop
        theirs from the cache)."""
        index = self._txn_indexes.get(seg.base_offset)
        if index is None:
            index = TransactionIndex(
                files.segment_path(self.dir, seg.base_offset, files.TXN_INDEX_SUFFIX))
            self._txn_indexes[seg.base_offset] = index
        return index

    def _apply_to_producer_state(self, seg: LogSegment, header: BatchHeader,
                                 data: bytes | bytearray | memoryview) -> None:
        """Record an appended batch in producer state; a COMMIT/ABORT marker (`data`: the
        control batch's bytes) completes its producer's transaction, and an ABORT adds
        the transaction to `seg`'s `.txnindex`."""
        if not header.is_control:
            self.producer_state.update(header, header.max_timestamp)
            return
        marker = read_marker(data)
        if marker is None:
            self.producer_state.update(header, header.max_timestamp)
            return
        commit, coordinator_epoch = marker
        completed = self.producer_state.apply_marker(header, commit, coordinator_epoch,
                                                     header.max_timestamp)
        self._index_completed(seg, completed)

    def _index_completed(self, seg: LogSegment, completed: CompletedTxn) -> None:
        if completed.aborted:
            self.txn_index(seg).append(AbortedTxn(
                completed.producer_id, completed.first_offset, completed.last_offset,
                self.producer_state.last_stable_offset_after(completed)))

    def remove_expired_producers(self) -> int:
        """Forget producers idle for producer.id.expiration.ms (see producer_state.py)."""
        return self.producer_state.remove_expired(
            self.clock.now_ms(), self.config.broker.get("producer.id.expiration.ms"))

    # --- offsets ----------------------------------------------------------------------
    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @high_watermark.setter
    def high_watermark(self, offset: int) -> None:
        self._high_watermark = offset
        self.producer_state.on_high_watermark(offset)

    @property
    def last_stable_offset(self) -> int:
        """Where read_committed reads stop: the first offset of the earliest transaction
        not decided or whose marker is not below the high watermark, else the high
        watermark. Never moves backwards (a transaction only starts at the log end)."""
        unstable = self.producer_state.first_unstable_offset()
        hw = self._high_watermark
        return hw if unstable is None or unstable > hw else unstable

    def collect_aborted_txns(self, start: int, end: int) -> list[AbortedTxn]:
        """The aborted transactions overlapping offsets [start, end), oldest first (for a
        read_committed Fetch; Kafka's collectAbortedTransactions)."""
        out: list[AbortedTxn] = []
        for seg in self.segments[self._segment_for(start):]:
            if seg.base_offset >= end and out:
                break
            found, complete = self.txn_index(seg).collect(start, end)
            out.extend(found)
            if complete:
                break
        return out

    @property
    def active_segment(self) -> LogSegment:
        return self.segments[-1]

    @property
    def log_end_offset(self) -> int:
        return self.segments[-1].next_offset

    @property
    def size_in_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    def _segment_for(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self._base_offsets, offset) - 1)

    # --- appending --------------------------------------------------------------------
    def append_as_leader(self, batch: bytearray, header: BatchHeader, leader_epoch: int
                         ) -> AppendResult:
        """Assign offsets to one validated batch and append it.

        Duplicate idempotent batches are not written again; the earlier offsets come back.
        """
        duplicate: BatchMetadata | None = None
        if header.producer_id >= 0 and header.base_sequence >= 0:
            duplicate = self.producer_state.check(header)
        if duplicate is not None:
            return AppendResult(duplicate.first_offset, duplicate.last_offset, -1, True)
        base_offset = self.log_end_offset
        assign_offsets(batch, base_offset, leader_epoch)
        log_append_time = -1
        if self.config.log_append_time:
            log_append_time = self.clock.now_ms()
            set_log_append_time(batch, log_append_time)
        header = BatchHeader(
            base_offset, header.batch_length, leader_epoch, header.magic, header.crc,
            header.attributes | (0x08 if log_append_time >= 0 else 0),
            header.last_offset_delta, header.base_timestamp,
            log_append_time if log_append_time >= 0 else header.max_timestamp,
            header.producer_id, header.producer_epoch, header.base_sequence,
            header.records_count)
        self._maybe_assign_epoch(leader_epoch, base_offset)
        self._append(batch, header)
        return AppendResult(base_offset, header.last_offset, log_append_time)

    def append_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int,
                      commit: bool, leader_epoch: int) -> AppendResult:
        """As leader: append a COMMIT/ABORT control batch for the producer (Kafka's
        control record: key version 0 + type, value version 0 + coordinator epoch), ending
        its transaction here. INVALID_PRODUCER_EPOCH for an older producer epoch,
        TRANSACTION_COORDINATOR_FENCED for an older coordinator epoch."""
        from strom.log.records import build_batch, end_txn_marker

        self.producer_state.check_marker(producer_id, producer_epoch, coordinator_epoch)
        now = self.clock.now_ms()
        batch = bytearray(build_batch(
            [end_txn_marker(commit, coordinator_epoch, now)], producer_id=producer_id,
            producer_epoch=producer_epoch, is_transactional=True, is_control=True))
        return self.append_as_leader(batch, read_header(batch), leader_epoch)

    def append_as_follower(self, data: bytes | bytearray | memoryview,
                           headers: list[BatchHeader]) -> None:
        """Append batches fetched from the leader, with their offsets as they are. The
        batches bound for one segment go to it in one write."""
        expected = self.log_end_offset
        for header in headers:
            if header.base_offset < expected:
                raise InvalidBatch(f"offset {header.base_offset} is below the log end "
                                   f"offset {expected}")
            expected = header.last_offset + 1
        if self.offline:
            raise OSError(errno.EIO, f"the log dir of {self.topic}-{self.partition} is offline")
        try:
            self._append_runs(data, headers)
        except OSError as e:
            if self.on_dir_failure is not None:
                self.on_dir_failure(e)
            raise

    def _append_runs(self, data: bytes | bytearray | memoryview, headers: list[BatchHeader]
                     ) -> None:
        view = memoryview(data)
        pos = i = 0
        while i < len(headers):
            first = headers[i]
            segment = self._maybe_roll(first.size, first)
            j, size = self._run_in_segment(segment, headers, i)
            run = headers[i:j]
            for header in run:
                self._maybe_assign_epoch(header.partition_leader_epoch, header.base_offset)
            segment.append_batches(view[pos:pos + size], run)
            at = pos
            for header in run:
                if header.producer_id >= 0:
                    self._apply_to_producer_state(
                        segment, header, view[at:at + header.size] if header.is_control
                        else b"")
                at += header.size
                self.unflushed_messages += header.records_count
            pos += size
            i = j

    def _run_in_segment(self, seg: LogSegment, headers: list[BatchHeader], i: int
                        ) -> tuple[int, int]:
        """(end, bytes) of the run of batches from `headers[i]` that `seg` takes without
        rolling, batch by batch as `_maybe_roll` would decide (headers[i] goes to `seg`)."""
        first = headers[i]
        size = first.size
        # at most one index entry per batch: the run ends before an index could fill up
        room = min(seg.index.max_entries - len(seg.index),
                   seg.time_index.max_entries - len(seg.time_index))
        first_ts = seg.first_batch_timestamp
        if first_ts is None:
            first_ts = first.max_timestamp
        now = self.clock.now_ms()
        j = i + 1
        while j < len(headers) and j - i < room:
            header = headers[j]
            if self._roll_reason(seg, seg.size + size, header.size, header, first_ts,
                                 now) is not None:
                break
            size += header.size
            j += 1
        return j, size

    def _append(self, data: bytes | bytearray, header: BatchHeader) -> None:
        self._check_online()
        try:
            segment = self._maybe_roll(len(data), header)
            segment.append(data, header)
        except OSError as e:
            # a full disk (ENOSPC) or an IO error: the segment cut the partial write off,
            # so the log ends where it did; the producer gets KAFKA_STORAGE_ERROR (and
            # another leader once the dir is offline, see LogManager.mark_dir_offline)
            raise self.write_failure(e) from None
        if header.producer_id >= 0:
            self._apply_to_producer_state(segment, header, data)
        self.unflushed_messages += header.records_count

    def _maybe_roll(self, size: int, header: BatchHeader) -> LogSegment:
        seg = self.active_segment
        reason = self._roll_reason(seg, seg.size, size, header, seg.first_batch_timestamp,
                                   self.clock.now_ms())
        if reason is None and seg.size and (seg.index.is_full or seg.time_index.is_full):
            reason = "index full"
        if reason is None:
            return seg
        return self.roll(reason)

    def _roll_reason(self, seg: LogSegment, seg_size: int, size: int, header: BatchHeader,
                     first_batch_timestamp: int | None, now: int) -> str | None:
        """Why a batch of `size` bytes must go to a new segment after `seg` holding
        `seg_size` bytes (None: it fits), the index limit aside."""
        if seg_size == 0:
            return None
        # As Kafka: the time a segment spans is measured in record timestamps from its
        # first batch, or from its creation when it has none.
        if first_batch_timestamp is not None and first_batch_timestamp >= 0:
            waited = header.max_timestamp - first_batch_timestamp
        else:
            waited = now - seg.created_ms
        config = self.config
        if seg_size + size > config.segment_bytes:
            return "segment.bytes"
        if waited > config.segment_ms:
            return "segment.ms"
        if header.last_offset - seg.base_offset > INT32_MAX:
            return "offset overflow"
        return None

    def roll(self, reason: str = "requested") -> LogSegment:
        old = self.active_segment
        if old.size == 0:
            return old
        old.on_roll()
        try:
            self.take_snapshot(sync=False)
        except OSError as e:
            log.warning("%s-%d: cannot write a producer-state snapshot: %s", self.topic,
                        self.partition, e)
        new = self._new_segment(self.log_end_offset, self.clock.now_ms(), create=True)
        new.next_offset = new.base_offset
        self.segments.append(new)
        self._base_offsets.append(new.base_offset)
        self._flush_after_roll = True  # the closed segment is fsynced by the next flush
        log.debug("Rolled %s-%d at offset %d (%s)", self.topic, self.partition,
                  new.base_offset, reason)
        return new

    # --- leader epochs ----------------------------------------------------------------
    def assign_epoch_start(self, epoch: int, start_offset: int) -> None:
        """A new leader records where its epoch starts (its log end offset at election),
        so OffsetForLeaderEpoch answers followers before it has appended anything."""
        self._maybe_assign_epoch(epoch, start_offset)

    def _maybe_assign_epoch(self, epoch: int, start_offset: int) -> None:
        if epoch < 0:
            return
        if self.leader_epochs and self.leader_epochs[-1][0] >= epoch:
            return
        self.leader_epochs.append((epoch, start_offset))
        self._write_leader_epochs()

    def _write_leader_epochs(self) -> None:
        """The leader-epoch-checkpoint is written off the loop (never in the append path):
        the entries go to the file's writer now and an executor thread writes them. Kafka
        fsyncs it inside append; here it is durable by the time the recovery point passes
        the entries (each flush writes it first), and the entries after the recovery point
        are rebuilt from the batch headers on recovery (`_rebuild_leader_epochs_from`)."""
        self._epoch_file.update(self.leader_epochs)
        off_loop(self._epoch_file.write_latest,
                 name=f"leader-epoch-checkpoint-{self.topic}-{self.partition}",
                 tracked=self._epoch_writes, on_os_error=self.dir_failed)

    def dir_failed(self, e: OSError) -> None:
        """A write of this log's files failed (ENOSPC, EIO): its dir goes offline, as
        Kafka's LogDirFailureChannel (the LogManager's `on_dir_failure`)."""
        if self.on_dir_failure is not None and not self.deleted:
            self.on_dir_failure(e)

    def _truncate_leader_epochs_after(self, end_offset: int) -> None:
        kept = [(e, o) for e, o in self.leader_epochs if o < end_offset or o == 0]
        if kept != self.leader_epochs:
            self.leader_epochs = kept
            self._write_leader_epochs()

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (epoch, end offset) as Kafka's
        LeaderEpochFileCache.endOffsetFor answers it:
          the latest epoch            (epoch, log end offset)
          between cached epochs       (largest cached epoch <= `epoch`, start offset of
                                      the next larger cached epoch)
          below the first cached one  (`epoch`, start offset of the first cached epoch:
                                      the data before it is gone)
          -1, above the latest one,   (-1, -1): UNDEFINED
          or no epochs cached
        """
        if epoch < 0 or not self.leader_epochs:
            return -1, -1
        if epoch == self.leader_epochs[-1][0]:
            return epoch, self.log_end_offset
        for i, (e, start) in enumerate(self.leader_epochs):
            if e > epoch:
                return (self.leader_epochs[i - 1][0] if i > 0 else epoch), start
        return -1, -1

    @property
    def latest_epoch(self) -> int:
        return self.leader_epochs[-1][0] if self.leader_epochs else -1

    # --- reading ----------------------------------------------------------------------
    def read(self, offset: int, max_bytes: int, max_offset: int, min_one: bool) -> ReadResult:
        """Batches from `offset` up to `max_offset` (exclusive: the high watermark for
        consumers, the log end offset for followers)."""
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRange(
                f"Offset {offset} is out of range for {self.topic}-{self.partition}: "
                f"[{self.log_start_offset}, {self.log_end_offset}]")
        slice_ = None
        if offset < max_offset:
            i = self._segment_for(offset)
            while i < len(self.segments) and slice_ is None:
                seg = self.segments[i]
                try:
                    slice_ = seg.read(offset, max_bytes, max_offset, min_one)
                except (CorruptBatch, OSError) as e:
                    raise self.read_failure(e, f"reads at offset {offset}") from None
                if seg.size and seg.next_offset > offset:  # the batch holding `offset` is
                    break  # here: stop, even if max_bytes left it out (later offsets would
                i += 1  # be skipped); a segment the cleaner emptied is passed over
        return ReadResult(slice_, self.log_start_offset, self.log_end_offset)

    def read_failure(self, e: Exception, what: str) -> KafkaError:
        """The error `what` (reads at some offset, a lookup) answers for a corrupt batch
        (CORRUPT_MESSAGE, as Kafka's read path answers a CorruptRecordException) or a
        failed read of the file (KAFKA_STORAGE_ERROR), logged once per place (not on every
        fetch, which the client repeats)."""
        where: tuple[str, int | str]
        if isinstance(e, OSError):
            where = (f"{self.topic}-{self.partition}", e.errno or 0)
            error: KafkaError = KafkaStorageError(
                f"Reading {self.topic}-{self.partition} failed: {e.strerror or e}")
        else:
            where = (e.path, e.position) if isinstance(e, CorruptBatch) else \
                (f"{self.topic}-{self.partition}", str(e))
            error = CorruptMessage(f"Corrupt batch in {self.topic}-{self.partition}: "
                                   f"{getattr(e, 'reason', e)}")
        if where not in self._read_failures_logged:
            self._read_failures_logged.add(where)
            log.error("%s-%d: %s fail with %s: %s", self.topic, self.partition, what,
                      error.code.name.upper(), e)
        return error

    def _check_online(self) -> None:
        if self.offline:
            raise KafkaStorageError(f"The log dir of {self.topic}-{self.partition} is offline")

    def write_failure(self, e: OSError) -> KafkaError:
        """KAFKA_STORAGE_ERROR for an append the file system refused (ENOSPC, EIO), as
        Kafka's produce path answers a KafkaStorageException; logged once per errno. The
        dir goes offline (`on_dir_failure`)."""
        if self.on_dir_failure is not None:
            self.on_dir_failure(e)
        where = (f"write {self.topic}-{self.partition}", e.errno or 0)
        if where not in self._read_failures_logged:
            self._read_failures_logged.add(where)
            log.error("%s-%d: appends fail with KAFKA_STORAGE_ERROR: %s", self.topic,
                      self.partition, e)
        return KafkaStorageError(f"Appending to {self.topic}-{self.partition} failed: "
                                 f"{e.strerror or e}")

    def batches_from(self, offset: int, max_offset: int | None = None):
        """(segment, BatchPosition) for each batch holding offsets >= `offset`."""
        i = self._segment_for(offset)
        for seg in self.segments[i:]:
            bp = seg.find_batch(offset)
            if bp is None:
                continue
            for b in seg.batches(bp.position):
                if max_offset is not None and b.header.base_offset >= max_offset:
                    return
                yield seg, b

    def offset_for_timestamp(self, timestamp: int, max_offset: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= `timestamp`, below
        `max_offset`; None if there is none. A corrupt batch on the way answers
        CORRUPT_MESSAGE, a failed read KAFKA_STORAGE_ERROR (see `read_failure`)."""
        from strom.log.records import CorruptRecordError

        try:
            return self._offset_for_timestamp(timestamp, max_offset)
        except (InvalidBatch, CorruptRecordError, OSError) as e:
            raise self.read_failure(e, f"timestamp lookups ({timestamp})") from None

    def max_timestamp_offset(self, max_offset: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with the largest timestamp below
        `max_offset`; errors as `offset_for_timestamp`."""
        from strom.log.records import CorruptRecordError

        try:
            return self._max_timestamp_offset(max_offset)
        except (InvalidBatch, CorruptRecordError, OSError) as e:
            raise self.read_failure(e, "max-timestamp lookups") from None

    def _offset_for_timestamp(self, timestamp: int, max_offset: int
                              ) -> tuple[int, int] | None:
        for seg in self.segments:
            if seg.max_timestamp < timestamp or seg.next_offset <= self.log_start_offset:
                continue
            start = max(seg.time_index.lookup(timestamp), self.log_start_offset)
            bp0 = seg.find_batch(start)
            if bp0 is None:
                continue
            for bp in seg.batches(bp0.position):
                h = bp.header
                if h.base_offset >= max_offset:
                    return None
                if h.max_timestamp < timestamp:
                    continue
                if h.is_log_append_time:
                    return max(h.base_offset, self.log_start_offset), h.max_timestamp
                for offset, ts in self._stored_records(seg.read_bytes(bp.position, h.size)):
                    if ts >= timestamp and offset >= self.log_start_offset:
                        if offset >= max_offset:
                            return None
                        return offset, ts
        return None

    def _max_timestamp_offset(self, max_offset: int) -> tuple[int, int] | None:
        """The batch comes from the headers, the record from decoding it."""
        best: tuple[LogSegment, int, int] | None = None  # segment, position, timestamp
        for seg in self.segments:
            if seg.next_offset <= self.log_start_offset or seg.max_timestamp < 0:
                continue
            if best is not None and seg.max_timestamp <= best[2]:
                continue
            for bp in seg.batches():
                h = bp.header
                if h.last_offset >= max_offset:
                    break
                if h.last_offset >= self.log_start_offset and \
                        (best is None or h.max_timestamp > best[2]):
                    best = (seg, bp.position, h.max_timestamp)
        if best is None:
            return None
        seg, position, timestamp = best
        data = seg.read_bytes(position, _batch_size(seg, position))
        for offset, ts in self._stored_records(data):
            if ts == timestamp and offset >= self.log_start_offset:
                return offset, ts
        return None

    def _stored_records(self, data: bytes):
        """(offset, timestamp) of each record of a stored batch (records are read only for
        timestamp lookups), building nothing and decompressing no further than a produced
        batch's records may take (validator.py): a batch beyond that, or corrupt, is
        CORRUPT_MESSAGE for this partition."""
        from strom.log.records import read_batch_header, record_times, records_area
        from strom.log.validator import max_records_bytes

        try:
            header = read_batch_header(data)
            area = records_area(data, 0, header, max_size=max_records_bytes(self.config))
            yield from record_times(area, header)
        except InvalidBatch as e:
            log.warning("Cannot read the records of a batch of %s: %s", self.dir, e)
            raise CorruptMessage(f"Cannot read the records of a batch: {e}") from None

    # --- truncation, retention, deletion ------------------------------------------------
    def truncate_to(self, offset: int) -> None:
        """Remove everything at and after `offset` (a follower after a leader change)."""
        if offset >= self.log_end_offset:
            return
        self.truncations += 1
        while len(self.segments) > 1 and self.segments[-1].base_offset >= offset:
            seg = self.segments.pop()
            self._base_offsets.pop()
            self._retire(seg)
        self.active_segment.truncate_to(offset)
        for seg in self.segments[self._segment_for(offset):]:
            self.txn_index(seg).truncate_to(offset)
        if self.active_segment.next_offset < offset:
            self.active_segment.next_offset = max(offset, self.active_segment.base_offset) \
                if self.active_segment.size == 0 else self.active_segment.next_offset
        self.high_watermark = min(self.high_watermark, self.log_end_offset)
        self.recovery_point = min(self.recovery_point, self.log_end_offset)
        # as Kafka: a follower's start offset (followed from its leader) never passes its end
        self.log_start_offset = min(self.log_start_offset, self.log_end_offset)
        self._truncate_leader_epochs_after(self.log_end_offset)
        self._load_producer_state()

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Drop every segment and restart the log empty at `offset` (a follower whose
        fetch offset fell below the leader's log start offset)."""
        self.truncations += 1
        for seg in self.segments:
            self._retire(seg)
        self.segments = []
        self._base_offsets = []
        new = self._new_segment(offset, self.clock.now_ms(), create=True)
        new.next_offset = offset
        self.segments.append(new)
        self._base_offsets.append(offset)
        self.log_start_offset = self.high_watermark = self.recovery_point = offset
        self._txn_indexes.clear()
        self.leader_epochs = []
        self._write_leader_epochs()
        self._load_producer_state()

    def maybe_increment_log_start_offset(self, offset: int) -> bool:
        """Move the log start offset up to `offset` (DeleteRecords on the leader, or a
        follower learning the leader's); True if it moved. As Kafka's
        maybeIncrementLogStartOffset: OFFSET_OUT_OF_RANGE past the high watermark, the
        leader epoch entries below it are folded into one starting there, and whole
        segments below it are removed (renamed `.deleted` now, through the retention
        path: `delete_segments_for_retention` and the LogManager's delayed delete)."""
        if offset > self.high_watermark:
            raise OffsetOutOfRange(
                f"Cannot increment the log start offset to {offset} of partition "
                f"{self.topic}-{self.partition} since it is larger than the high watermark "
                f"{self.high_watermark}")
        if offset <= self.log_start_offset:
            return False
        self.log_start_offset = offset
        below = [(e, o) for e, o in self.leader_epochs if o < offset]
        if below:
            kept = [(e, o) for e, o in self.leader_epochs if o >= offset]
            if not kept or kept[0][1] > offset:
                kept.insert(0, (below[-1][0], offset))
            self.leader_epochs = kept
            self._write_leader_epochs()
        self.delete_segments_for_retention()
        return True

    def delete_segments_for_retention(self) -> int:
        """Delete the oldest segments past retention.ms or retention.bytes, or below the
        log start offset; returns how many. As Kafka's UnifiedLog.deletableSegments, the
        active segment counts too (by retention.ms and retention.bytes, when not empty and
        all of it is below the high watermark): an idle partition's expired data goes
        without waiting for an append to roll it. Deleting every segment rolls a new, empty
        active segment at the log end offset first."""
        retention_ms = self.config.get("retention.ms")
        retention_bytes = self.config.get("retention.bytes")
        if self.config.compact and "delete" not in self.config.get("cleanup.policy"):
            return 0
        now = self.clock.now_ms()
        deletable: list[LogSegment] = []
        excess = self.size_in_bytes - retention_bytes if retention_bytes >= 0 else 0
        active = self.active_segment
        for seg in self.segments:
            if seg.next_offset > self.high_watermark or (seg is active and not seg.size):
                break  # never delete what consumers cannot see yet, nor an empty log
            expired = retention_ms >= 0 and seg.max_timestamp >= 0 and \
                now - seg.max_timestamp > retention_ms
            too_big = excess > 0 and excess - seg.size >= 0
            below_start = seg is not active and seg.next_offset <= self.log_start_offset
            if not (expired or too_big or below_start):
                break
            excess -= seg.size
            deletable.append(seg)
        if deletable and deletable[-1] is active:
            self.roll("retention")  # a log always keeps one segment
        for seg in deletable:
            self.segments.remove(seg)
            seg.rename_to_deleted()
            log.info("Deleting segment %s (retention)", seg.log_path)
        if deletable:
            self._base_offsets = [s.base_offset for s in self.segments]
            self.log_start_offset = max(self.log_start_offset, self.segments[0].base_offset)
            self._retired.extend(deletable)
            for seg in deletable:
                self._txn_indexes.pop(seg.base_offset, None)
            self._delete_snapshots_below(self.segments[0].base_offset)
        return len(deletable)

    def _retire(self, seg: LogSegment) -> None:
        """Truncation drops a segment as Kafka does: renamed `.deleted` now (cheap, on
        the loop), removed off the loop after file.delete.delay.ms (see take_retired)."""
        seg.rename_to_deleted()
        self._txn_indexes.pop(seg.base_offset, None)
        self._retired.append(seg)

    def replace_segments(self, old: list[LogSegment], base_offset: int,
                         step: swap.StepHook = swap.no_step) -> bool:
        """Put the cleaned segment `<base_offset>.log.cleaned` (written and fsynced by a
        cleaner thread) in place of the consecutive closed segments `old` (log/swap.py has
        the steps and their recovery). On the owner (the event loop), so no append, fetch,
        truncation or retention sees a half-done swap. Returns False, changing nothing,
        when `old` are no longer closed segments of this log (truncated, deleted or retired
        meanwhile): the caller discards the cleaned files."""
        if self.deleted or not old:
            return False
        i = next((k for k, s in enumerate(self.segments) if s is old[0]), None)
        if i is None or i + len(old) >= len(self.segments) or \
                any(a is not b for a, b in zip(self.segments[i:i + len(old)], old,
                                               strict=False)):
            return False
        # the cleaned segment's .txnindex (written by the cleaner with its other files: the
        # aborted transactions whose data it keeps) goes through the swap's steps with them
        swap.rename_cleaned_to_swap(self.dir, base_offset, step)
        for k, seg in enumerate(old):
            seg.rename_to_deleted()
            step(f"deleted.{k}")
        swap.rename_swap_to_final(self.dir, base_offset, step)
        new = self._new_segment(base_offset, self.clock.now_ms(), create=False)
        new.load_indexes()
        new.tail.clear()  # closed: reads go through the offset index
        self.segments[i:i + len(old)] = [new]
        self._base_offsets = [s.base_offset for s in self.segments]
        self._retired.extend(old)  # removed after file.delete.delay.ms (LogManager)
        for seg in old:
            self._txn_indexes.pop(seg.base_offset, None)
        return True

    def take_retired(self) -> list[LogSegment]:
        """Segments renamed `.deleted`, for the LogManager to remove after a delay."""
        out, self._retired = self._retired, []
        return out

    # --- flushing and closing ---------------------------------------------------------
    def needs_flush(self) -> bool:
        if self._flush_after_roll:
            return True
        if self.unflushed_messages == 0:
            return False
        if self.unflushed_messages >= self.config.get("flush.messages"):
            return True
        return self.clock.now_ms() - self.last_flush_ms >= self.config.get("flush.ms")

    def flush_to_os(self) -> None:
        for seg in self.segments[-2:]:
            seg.flush()

    def start_flush(self) -> tuple[int, list[LogSegment]]:
        """On the loop: write pending index entries; returns (end offset, segments) for
        `fsync_segments` (off the loop) and then `flushed(end)` (on the loop)."""
        end = self.log_end_offset
        segments = self.segments[self._segment_for(self.recovery_point):]
        for seg in segments:
            seg.flush()
        self._flush_after_roll = False
        self.unflushed_messages = 0
        self.last_flush_ms = self.clock.now_ms()
        self._flush_starts[end] = self.truncations
        return end, segments

    def fsync_segments(self, segments: list[LogSegment]) -> None:
        """Blocking fsync of segment and index files, and the leader-epoch-checkpoint
        written (from its own thread-safe snapshot) before `flushed` moves the recovery
        point; touches no state the loop owns."""
        for seg in segments:
            seg.fsync_files()
        self._fsync_snapshots()
        self._epoch_file.write_latest()

    def _fsync_snapshots(self) -> None:
        """Off the loop: force the snapshots written at rolls since the last flush (the
        loop appends to the deque, this thread takes from it) and their directory."""
        synced = False
        while self._unsynced_snapshots:
            path = self._unsynced_snapshots.popleft()
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # deleted with its segments meanwhile
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            synced = True
        if synced:
            files.fsync_dir(self.dir)

    def flushed(self, end: int) -> None:
        """The fsync of a `start_flush` that returned `end` is done. A truncation since
        then (and records appended after it) makes the offsets below `end` other records
        than those fsynced: the recovery point stays (truncate_to lowered it)."""
        if self._flush_starts.pop(end, self.truncations) != self.truncations:
            return
        self.recovery_point = max(self.recovery_point, min(end, self.log_end_offset))

    def fsync(self) -> None:
        """Flush everything now, on the caller's thread (shutdown, tests)."""
        end, segments = self.start_flush()
        self.fsync_segments(segments)
        self.flushed(end)

    def close(self) -> None:
        """Clean shutdown: a producer-state snapshot at the log end, so the next load
        replays nothing."""
        if not self.deleted:
            try:
                self.take_snapshot()
            except OSError as e:
                log.warning("%s-%d: cannot write a producer-state snapshot: %s", self.topic,
                            self.partition, e)
                self.dir_failed(e)  # no clean-shutdown marker: recovered at the next start
        for seg in self.segments:
            seg.close()
        for seg in self.take_retired():
            seg.close()

    def delete(self) -> str:
        """Topic deletion, the part on the loop: close every file and rename the
        directory to `<topic>-<partition>.<unique id>-delete` (as Kafka); returns that
        path, which the LogManager removes off the loop (and start-up, if it is left)."""
        self.deleted = True
        self._epoch_file.close()
        for seg in self.segments + self.take_retired():
            seg.close_for_deletion()
        doomed = f"{self.dir}.{uuid.uuid4().hex}{files.DELETE_DIR_SUFFIX}"
        os.rename(self.dir, doomed)
        return doomed


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_marker(data: bytes | bytearray | memoryview) -> tuple[bool, int] | None:
    """(commit, coordinator epoch) of a COMMIT/ABORT control batch's bytes; None for
    another control record type (or an unreadable one, logged)."""
    from strom.log.records import (
        ControlRecordType,
        CorruptRecordError,
        decode_control_record,
        decode_records,
    )

    try:
        records = decode_records(bytes(data), 0, verify_crc=False)
        if not records:
            return None
        kind, coordinator_epoch = decode_control_record(records[0])
    except (InvalidBatch, CorruptRecordError) as e:
        log.warning("Unreadable control batch at offset %d: %s", read_header(data).base_offset, e)
        return None
    if kind == ControlRecordType.COMMIT:
        return True, coordinator_epoch or 0
    if kind == ControlRecordType.ABORT:
        return False, coordinator_epoch or 0
    return None
