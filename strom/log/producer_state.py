"""Per-partition state of idempotent producers: epochs and recent sequence numbers.

For each producer id the partition remembers its epoch and the last few batches (first and
last sequence, first and last offset). A retried batch that matches one of them is a
duplicate: it is not written again and the original offsets are returned. A batch whose
first sequence does not follow the last one is OUT_OF_ORDER_SEQUENCE_NUMBER; an epoch older
than the current one is INVALID_PRODUCER_EPOCH. As in Kafka, a producer the partition knows
nothing about (state lost to retention or a restart) may start at any sequence.

Transactions (Kafka's ProducerStateManager): a transactional data batch from a producer
with no ongoing transaction on this partition starts one at its first offset; a COMMIT or
ABORT marker (control batch) ends it, giving a `CompletedTxn`. The first unstable offset is
the smallest first offset of the ongoing transactions and of the completed ones whose marker
is not yet below the high watermark ("unreplicated"); the last stable offset (LSO) is
min(first unstable offset, high watermark), so a read_committed consumer never reads past a
transaction whose outcome is not decided and replicated. A marker with an older producer
epoch is INVALID_PRODUCER_EPOCH, one with an older coordinator epoch than the last marker
TRANSACTION_COORDINATOR_FENCED.

State is rebuilt on load from the latest producer-state snapshot (`<offset>.snapshot`, see
producer_snapshot.py) and the batches after it (see PartitionLog). A producer is forgotten
producer.id.expiration.ms after the timestamp of its last batch (checked every
producer.id.expiration.check.interval.ms and on load) unless a transaction of it is open,
so producer ids a client makes up do not pile up. Owned by its PartitionLog (the event loop).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from strom.log.producer_snapshot import SnapshotEntry
from strom.protocol.batch import BatchHeader
from strom.protocol.errors import (
    InvalidProducerEpoch,
    InvalidTxnState,
    OutOfOrderSequence,
    TransactionCoordinatorFenced,
)

NUM_BATCHES_TO_RETAIN = 5
INT32_MAX = (1 << 31) - 1


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int


@dataclass(slots=True)
class ProducerEntry:
    producer_id: int
    epoch: int
    batches: deque[BatchMetadata] = field(
        default_factory=lambda: deque(maxlen=NUM_BATCHES_TO_RETAIN))
    last_timestamp: int = -1
    coordinator_epoch: int = -1
    current_txn_first_offset: int = -1  # -1: no ongoing transaction on this partition

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    def find_duplicate(self, header: BatchHeader) -> BatchMetadata | None:
        for b in self.batches:
            if b.first_seq == header.base_sequence and b.last_seq == header.last_sequence:
                return b
        return None


@dataclass(frozen=True, slots=True)
class CompletedTxn:
    """A transaction ended by a marker: data from `first_offset`, marker at `last_offset`."""
    producer_id: int
    first_offset: int
    last_offset: int
    aborted: bool


def _in_sequence(last_seq: int, first_seq: int) -> bool:
    return first_seq == last_seq + 1 or (first_seq == 0 and last_seq == INT32_MAX)


class ProducerStateManager:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}
        # first offset -> producer id, of the transactions not decided yet
        self.ongoing: dict[int, int] = {}
        # decided transactions whose marker is at or above the high watermark
        self.unreplicated: list[CompletedTxn] = []

    def check(self, header: BatchHeader) -> BatchMetadata | None:
        """Validate an idempotent batch before it is appended.

        Returns the earlier batch's metadata when this one is a duplicate, else None.
        Raises InvalidProducerEpoch or OutOfOrderSequence.
        """
        entry = self.producers.get(header.producer_id)
        if entry is None:
            return None
        if header.producer_epoch < entry.epoch:
            raise InvalidProducerEpoch(
                f"Producer {header.producer_id}'s epoch {header.producer_epoch} is older "
                f"than the current epoch {entry.epoch}")
        if header.producer_epoch > entry.epoch:
            if header.base_sequence != 0:
                raise OutOfOrderSequence(
                    f"Invalid sequence {header.base_sequence} for new epoch "
                    f"{header.producer_epoch} of producer {header.producer_id}: expected 0")
            return None
        if entry.current_txn_first_offset >= 0 and not header.is_transactional:
            raise InvalidTxnState(
                f"Expected a transactional write from producer {header.producer_id}: it has "
                f"a transaction open since offset {entry.current_txn_first_offset}")
        duplicate = entry.find_duplicate(header)
        if duplicate is not None:
            return duplicate
        if entry.batches and not _in_sequence(entry.last_seq, header.base_sequence):
            raise OutOfOrderSequence(
                f"Out of order sequence number for producer {header.producer_id}: "
                f"{header.base_sequence} (incoming), {entry.last_seq} (current end)")
        return None

    def update(self, header: BatchHeader, timestamp: int) -> None:
        """Record an appended batch (as leader, follower or while loading the log)."""
        if header.producer_id < 0:
            return
        entry = self.producers.get(header.producer_id)
        if entry is None or header.producer_epoch > entry.epoch:
            entry = self._new_epoch(header.producer_id, header.producer_epoch, entry)
        elif header.producer_epoch < entry.epoch:
            return
        if header.is_control:
            entry.last_timestamp = timestamp
            return
        if header.base_sequence >= 0:
            entry.batches.append(BatchMetadata(header.base_sequence, header.last_sequence,
                                               header.base_offset, header.last_offset,
                                               timestamp))
        entry.last_timestamp = timestamp
        if header.is_transactional and entry.current_txn_first_offset < 0:
            entry.current_txn_first_offset = header.base_offset
            self.ongoing[header.base_offset] = header.producer_id

    def _new_epoch(self, producer_id: int, epoch: int, old: ProducerEntry | None
                   ) -> ProducerEntry:
        """A producer's entry for a new epoch: sequences start over, an open transaction
        and the coordinator epoch carry over (the marker may come with the bumped epoch)."""
        entry = ProducerEntry(producer_id, epoch)
        if old is not None:
            entry.current_txn_first_offset = old.current_txn_first_offset
            entry.coordinator_epoch = old.coordinator_epoch
        self.producers[producer_id] = entry
        return entry

    # --- transactions -----------------------------------------------------------------
    def has_ongoing_txn(self, producer_id: int, producer_epoch: int | None = None) -> bool:
        """Whether the producer has a transaction open here; with `producer_epoch`, one of
        that epoch (Transactions V2: a batch of the next epoch may arrive before the
        previous transaction's marker, and must not join that transaction)."""
        entry = self.producers.get(producer_id)
        return entry is not None and entry.current_txn_first_offset >= 0 and \
            (producer_epoch is None or entry.epoch == producer_epoch)

    def check_marker(self, producer_id: int, producer_epoch: int,
                     coordinator_epoch: int) -> None:
        """Validate a COMMIT/ABORT marker before it is appended as leader (Kafka's
        ProducerAppendInfo.appendEndTxnMarker): an older producer epoch is
        INVALID_PRODUCER_EPOCH, an older coordinator epoch TRANSACTION_COORDINATOR_FENCED."""
        entry = self.producers.get(producer_id)
        if entry is None:
            return
        if producer_epoch < entry.epoch:
            raise InvalidProducerEpoch(
                f"Producer {producer_id}'s epoch {producer_epoch} in a transaction marker is "
                f"older than the current epoch {entry.epoch}")
        if coordinator_epoch < entry.coordinator_epoch:
            raise TransactionCoordinatorFenced(
                f"Invalid coordinator epoch for producer {producer_id}: {coordinator_epoch} "
                f"(zombie), {entry.coordinator_epoch} (current)")

    def apply_marker(self, header: BatchHeader, commit: bool, coordinator_epoch: int,
                     timestamp: int) -> CompletedTxn:
        """Record an appended COMMIT/ABORT marker (any role, or while loading): the
        producer's ongoing transaction (if any: a marker may come for a partition the
        transaction never wrote to) is complete; it stays unstable until the high watermark
        passes the marker (`on_high_watermark`). Call `last_stable_offset_after` first for
        the `.txnindex` entry."""
        pid = header.producer_id
        entry = self.producers.get(pid)
        if entry is None or header.producer_epoch > entry.epoch:
            entry = self._new_epoch(pid, header.producer_epoch, entry)
        first = entry.current_txn_first_offset
        if first < 0:
            first = header.base_offset
        else:
            self.ongoing.pop(first, None)
        completed = CompletedTxn(pid, first, header.base_offset, not commit)
        if first < header.base_offset:
            self.unreplicated.append(completed)
        entry.current_txn_first_offset = -1
        entry.coordinator_epoch = coordinator_epoch
        entry.last_timestamp = timestamp
        return completed

    def last_stable_offset_after(self, completed: CompletedTxn) -> int:
        """The LSO once `completed` is decided, for its `.txnindex` entry (Kafka's
        lastStableOffset(completedTxn)): the first offset of the earliest transaction of
        another producer still open, else just past the marker."""
        others = [first for first, pid in self.ongoing.items()
                  if pid != completed.producer_id]
        return min(others) if others else completed.last_offset + 1

    def on_high_watermark(self, high_watermark: int) -> None:
        """Completed transactions whose marker is below the high watermark are stable."""
        if self.unreplicated:
            self.unreplicated = [t for t in self.unreplicated
                                 if t.last_offset >= high_watermark]

    def first_unstable_offset(self) -> int | None:
        firsts = [t.first_offset for t in self.unreplicated]
        if self.ongoing:
            firsts.append(min(self.ongoing))
        return min(firsts) if firsts else None

    def first_undecided_offset(self) -> int | None:
        return min(self.ongoing) if self.ongoing else None

    def ongoing_txns(self) -> list[tuple[int, int]]:
        """(first offset, producer id) of each open transaction, oldest first."""
        return sorted(self.ongoing.items())

    # --- snapshots --------------------------------------------------------------------
    def snapshot_entries(self) -> list[SnapshotEntry]:
        out = []
        for e in self.producers.values():
            last = e.batches[-1] if e.batches else None
            out.append(SnapshotEntry(
                e.producer_id, e.epoch, last.last_seq if last else -1,
                last.last_offset if last else -1,
                last.last_offset - last.first_offset if last else 0, e.last_timestamp,
                e.coordinator_epoch, e.current_txn_first_offset))
        return out

    def load_snapshot(self, entries: list[SnapshotEntry], now_ms: int,
                      expiration_ms: int) -> None:
        """Start from a snapshot's entries (expired producers without an open transaction
        are left out, as Kafka's loadFromSnapshot)."""
        self.clear()
        for s in entries:
            if s.current_txn_first_offset < 0 and now_ms - s.timestamp >= expiration_ms:
                continue
            entry = ProducerEntry(s.producer_id, s.epoch, last_timestamp=s.timestamp,
                                  coordinator_epoch=s.coordinator_epoch,
                                  current_txn_first_offset=s.current_txn_first_offset)
            if s.last_offset >= 0:
                first_seq = s.last_sequence - s.offset_delta if s.last_sequence >= 0 else -1
                if first_seq < 0 <= s.last_sequence:
                    first_seq += INT32_MAX + 1
                entry.batches.append(BatchMetadata(first_seq, s.last_sequence,
                                                   s.last_offset - s.offset_delta,
                                                   s.last_offset, s.timestamp))
            self.producers[s.producer_id] = entry
            if s.current_txn_first_offset >= 0:
                self.ongoing[s.current_txn_first_offset] = s.producer_id

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        """Forget the producers whose last batch's timestamp is `expiration_ms` or more
        before `now_ms` (producer.id.expiration.ms, as Kafka's removeExpiredProducers);
        returns how many. A forgotten producer that comes back is an unknown one."""
        expired = [pid for pid, e in self.producers.items()
                   if now_ms - e.last_timestamp >= expiration_ms
                   and e.current_txn_first_offset < 0]
        for pid in expired:
            del self.producers[pid]
        return len(expired)

    def clear(self) -> None:
        self.producers.clear()
        self.ongoing.clear()
        self.unreplicated.clear()
