"""What the cleaner may drop of transactions (Kafka's CleanedTransactionMetadata).

The cleaner reads a log's batches in offset order; this tracks, as it goes, which producers
are inside an aborted transaction and which inside another (committed) one, knowing the
aborted transactions ahead of time from the `.txnindex` entries of the segments it reads
(every batch read is below the last stable offset, so each transaction met is decided).

- A transactional data batch of a producer inside an aborted transaction (entry's first
  offset <= the batch, before its ABORT marker) is aborted data: `on_batch_read` says so,
  and the cleaner drops its records whatever their keys (the batch itself stays, empty,
  when it is its producer's last: producer state).
- An ABORT marker before which no data of its transaction was met in this pass may go: its
  `.txnindex` entry is not carried into the cleaned segment (nothing is left for a
  read_committed consumer to skip). One whose data was met (and is being dropped now, or is
  kept as an empty producer-state batch) stays, and so does its entry.
- A COMMIT marker may go once no data of its transaction was met in this pass.
- An empty control batch (a marker already emptied) may go; a control record of another
  type stays.

"May go" is not "goes": the cleaner first gives such a marker a delete horizon (now +
`delete.retention.ms`, as a tombstone's) and removes it in a round after the horizon, so a
consumer that read the transaction's data before the clean still sees its end. Three rounds
at least, as Kafka: the one that drops the data keeps the marker, a later one starts its
horizon, one after the horizon removes it.

One instance per pass over the log (the key map has its own), carried across the groups of
segments of a round, since a transaction's data and its marker may be in different groups.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from strom.log.transaction_index import AbortedTxn
from strom.protocol.batch import BatchHeader

CONTROL_ABORT = 0
CONTROL_COMMIT = 1


class _Ongoing:
    __slots__ = ("txn", "data_seen")

    def __init__(self, txn: AbortedTxn) -> None:
        self.txn = txn
        self.data_seen = False


class CleanedTransactionMetadata:
    def __init__(self, aborted: Iterable[AbortedTxn]) -> None:
        # by first offset: an aborted transaction becomes "ongoing" once a batch at or past
        # its first offset is read
        self._pending = [(t.first_offset, i, t) for i, t in enumerate(aborted)]
        heapq.heapify(self._pending)
        self._aborted: dict[int, _Ongoing] = {}  # producer id -> its open aborted txn
        self._committed: set[int] = set()  # producers with data of another txn met
        # the entries the cleaned segment being written keeps (the cleaner sets a new list
        # for each group of segments)
        self.retained_entries: list[AbortedTxn] = []

    def _start_up_to(self, offset: int) -> None:
        pending = self._pending
        while pending and pending[0][0] <= offset:
            txn = heapq.heappop(pending)[2]
            self._aborted.setdefault(txn.producer_id, _Ongoing(txn))

    def on_batch_read(self, header: BatchHeader) -> bool:
        """A data batch was read; True when it is aborted data (its records may all go)."""
        self._start_up_to(header.last_offset)
        if not header.is_transactional:
            return False
        ongoing = self._aborted.get(header.producer_id)
        if ongoing is not None:
            ongoing.data_seen = True
            return True
        self._committed.add(header.producer_id)
        return False

    def on_control_batch_read(self, header: BatchHeader, control_type: int | None) -> bool:
        """A control batch was read (`control_type`: its record's type, None when it has
        no record); True when it may be removed once past its delete horizon."""
        self._start_up_to(header.last_offset)
        pid = header.producer_id
        if control_type is None:
            return True
        if control_type == CONTROL_ABORT:
            ongoing = self._aborted.pop(pid, None)
            if ongoing is not None and ongoing.data_seen:
                self.retained_entries.append(ongoing.txn)
                return False
            return True
        if control_type == CONTROL_COMMIT:
            if pid in self._committed:
                self._committed.discard(pid)
                return False
            return True
        return False
