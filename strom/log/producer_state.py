"""Per-partition state of idempotent producers: epochs and recent sequence numbers.

For each producer id the partition remembers its epoch and the last few batches (first and
last sequence, first and last offset). A retried batch that matches one of them is a
duplicate: it is not written again and the original offsets are returned. A batch whose
first sequence does not follow the last one is OUT_OF_ORDER_SEQUENCE_NUMBER; an epoch older
than the current one is INVALID_PRODUCER_EPOCH. As in Kafka, a producer the partition knows
nothing about (state lost to retention or a restart) may start at any sequence.

State is rebuilt on load by reading batch headers from the log's tail (see PartitionLog).
A producer is forgotten producer.id.expiration.ms after the timestamp of its last batch
(checked every producer.id.expiration.check.interval.ms and on load), so producer ids a
client makes up do not pile up. Owned by its PartitionLog (the event loop).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from strom.protocol.batch import BatchHeader
from strom.protocol.errors import InvalidProducerEpoch, OutOfOrderSequence

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

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    def find_duplicate(self, header: BatchHeader) -> BatchMetadata | None:
        for b in self.batches:
            if b.first_seq == header.base_sequence and b.last_seq == header.last_sequence:
                return b
        return None


def _in_sequence(last_seq: int, first_seq: int) -> bool:
    return first_seq == last_seq + 1 or (first_seq == 0 and last_seq == INT32_MAX)


class ProducerStateManager:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}

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
            entry = ProducerEntry(header.producer_id, header.producer_epoch)
            self.producers[header.producer_id] = entry
        elif header.producer_epoch < entry.epoch:
            return
        if header.base_sequence >= 0:
            entry.batches.append(BatchMetadata(header.base_sequence, header.last_sequence,
                                               header.base_offset, header.last_offset,
                                               timestamp))
        entry.last_timestamp = timestamp

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        """Forget the producers whose last batch's timestamp is `expiration_ms` or more
        before `now_ms` (producer.id.expiration.ms, as Kafka's removeExpiredProducers);
        returns how many. A forgotten producer that comes back is an unknown one."""
        expired = [pid for pid, e in self.producers.items()
                   if now_ms - e.last_timestamp >= expiration_ms]
        for pid in expired:
            del self.producers[pid]
        return len(expired)

    def clear(self) -> None:
        self.producers.clear()
