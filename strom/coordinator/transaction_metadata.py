"""One transactional id's state and Kafka's transaction state machine.

States and the states each may follow (Kafka's TransactionState):
    Empty              <- Empty, CompleteCommit, CompleteAbort   (InitProducerId)
    Ongoing            <- Ongoing, Empty, CompleteCommit, CompleteAbort
                          (AddPartitionsToTxn, AddOffsetsToTxn)
    PrepareCommit      <- Ongoing                                (EndTxn commit)
    PrepareAbort       <- Ongoing, PrepareEpochFence             (EndTxn abort, timeout)
    CompleteCommit     <- PrepareCommit                          (every marker written)
    CompleteAbort      <- PrepareAbort
    PrepareEpochFence  <- Ongoing                                (InitProducerId or the
                          timeout fences an open transaction: epoch + 1, then abort)
    Dead               <- Empty, CompleteCommit, CompleteAbort   (the id expired)

Transactions V2 (KIP-890 part 2, `txn_version` 2: EndTxn v5, or a partition added by a
Produce v12 leader) bump the epoch at the end of every transaction: PrepareCommit/
PrepareAbort carry epoch + 1 (the markers are written with it), or, when the epoch is
exhausted, keep it at MAX_EPOCH and name `next_producer_id`, which the completion moves to
(epoch 0), as Kafka's prepareAbortOrCommit and prepareComplete.

A change is two steps, as in Kafka: `prepare_*` checks the move, sets `pending` and returns
the target (`TxnTransition`); the target is written to `__transaction_state`; then
`complete(target)` applies it, or `abort_pending()` drops it when the write failed. While
`pending` is set, requests for the id get CONCURRENT_TRANSACTIONS.

Owned by the TransactionCoordinator on the event loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from strom.protocol.errors import ErrorCode, kafka_error

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
MAX_EPOCH = 32767


class TxnState(enum.IntEnum):
    """Values are the status bytes of TransactionLogValue."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def kafka_name(self) -> str:
        """The name DescribeTransactions and ListTransactions use, e.g. PrepareCommit."""
        return "".join(p.title() for p in self.name.split("_"))

    @classmethod
    def by_kafka_name(cls, name: str) -> TxnState | None:
        for s in cls:
            if s.kafka_name == name:
                return s
        return None


_ENDED = {TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT}
VALID_PREVIOUS: dict[TxnState, frozenset[TxnState]] = {
    TxnState.EMPTY: frozenset(_ENDED),
    TxnState.ONGOING: frozenset(_ENDED | {TxnState.ONGOING}),
    TxnState.PREPARE_COMMIT: frozenset({TxnState.ONGOING}),
    TxnState.PREPARE_ABORT: frozenset({TxnState.ONGOING, TxnState.PREPARE_EPOCH_FENCE}),
    TxnState.COMPLETE_COMMIT: frozenset({TxnState.PREPARE_COMMIT}),
    TxnState.COMPLETE_ABORT: frozenset({TxnState.PREPARE_ABORT}),
    TxnState.PREPARE_EPOCH_FENCE: frozenset({TxnState.ONGOING}),
    TxnState.DEAD: frozenset(_ENDED),
}


@dataclass(frozen=True, slots=True)
class TxnTransition:
    """What a transactional id becomes once the record for it is written."""

    producer_id: int
    last_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    timeout_ms: int
    state: TxnState
    partitions: frozenset[tuple[str, int]]
    start_ms: int
    update_ms: int
    next_producer_id: int = NO_PRODUCER_ID
    txn_version: int = 0  # Kafka's clientTransactionVersion: 2 for Transactions V2


@dataclass(slots=True)
class TransactionMetadata:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    last_producer_id: int = NO_PRODUCER_ID
    last_producer_epoch: int = NO_PRODUCER_EPOCH
    partitions: set[tuple[str, int]] = field(default_factory=set)
    start_ms: int = -1
    last_update_ms: int = -1
    pending: TxnState | None = None
    next_producer_id: int = NO_PRODUCER_ID
    txn_version: int = 0

    # --- the steps of a change -------------------------------------------------------
    def _current(self) -> TxnTransition:
        return TxnTransition(self.producer_id, self.last_producer_id, self.producer_epoch,
                             self.last_producer_epoch, self.timeout_ms, self.state,
                             frozenset(self.partitions), self.start_ms, self.last_update_ms,
                             self.next_producer_id, self.txn_version)

    def _prepare(self, target: TxnTransition) -> TxnTransition:
        if self.pending is not None:
            raise kafka_error(ErrorCode.concurrent_transactions,
                              f"{self.transactional_id} is moving to {self.pending.kafka_name}")
        if self.state not in VALID_PREVIOUS[target.state]:
            raise AssertionError(f"{self.transactional_id}: {self.state.kafka_name} cannot "
                                 f"move to {target.state.kafka_name}")
        self.pending = target.state
        return target

    def complete(self, t: TxnTransition) -> None:
        """Apply a written transition (checked again: the state may not have moved)."""
        if self.pending != t.state or self.state not in VALID_PREVIOUS[t.state]:
            raise AssertionError(f"{self.transactional_id}: cannot complete "
                                 f"{self.state.kafka_name} -> {t.state.kafka_name} "
                                 f"(pending {self.pending})")
        self.producer_id, self.last_producer_id = t.producer_id, t.last_producer_id
        self.producer_epoch, self.last_producer_epoch = t.producer_epoch, t.last_producer_epoch
        self.timeout_ms, self.state = t.timeout_ms, t.state
        self.partitions = set(t.partitions)
        self.start_ms, self.last_update_ms = t.start_ms, t.update_ms
        self.next_producer_id, self.txn_version = t.next_producer_id, t.txn_version
        self.pending = None

    def abort_pending(self) -> None:
        self.pending = None

    # --- the moves -------------------------------------------------------------------
    def prepare_init(self, new_producer_id: int | None, timeout_ms: int, now_ms: int
                     ) -> TxnTransition:
        """InitProducerId on an ended transaction: epoch + 1, or a new producer id (epoch
        0) when `new_producer_id` is given (epoch exhausted, or a first use)."""
        if new_producer_id is not None:
            pid, epoch = new_producer_id, 0
            last_pid, last_epoch = self.producer_id, self.producer_epoch
        else:
            pid, epoch = self.producer_id, self.producer_epoch + 1
            last_pid, last_epoch = NO_PRODUCER_ID, self.producer_epoch
        return self._prepare(TxnTransition(pid, last_pid, epoch, last_epoch, timeout_ms,
                                           TxnState.EMPTY, frozenset(), -1, now_ms))

    def prepare_add_partitions(self, partitions: set[tuple[str, int]], now_ms: int,
                               txn_version: int | None = None) -> TxnTransition:
        """Ongoing with `partitions` added; `txn_version` 2 when a Produce v12 leader adds
        them (the transaction is then a V2 one)."""
        start = now_ms if self.state in _ENDED else self.start_ms
        version = self.txn_version if txn_version is None else txn_version
        return self._prepare(replace(
            self._current(), state=TxnState.ONGOING,
            partitions=frozenset(self.partitions | partitions), start_ms=start,
            update_ms=now_ms, txn_version=version))

    def prepare_end_v2(self, commit: bool, now_ms: int, next_producer_id: int
                       ) -> TxnTransition:
        """EndTxn v5 (Transactions V2): PrepareCommit or PrepareAbort with epoch + 1; with
        an exhausted epoch (`next_producer_id` given) the epoch becomes MAX_EPOCH and the
        completion moves to `next_producer_id`."""
        state = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        return self._prepare(replace(
            self._current(), state=state,
            producer_epoch=min(self.producer_epoch + 1, MAX_EPOCH),
            last_producer_epoch=self.producer_epoch, next_producer_id=next_producer_id,
            txn_version=2, update_ms=now_ms))

    def prepare_end(self, commit: bool, now_ms: int, fence: bool = False
                    ) -> TxnTransition:
        """EndTxn: PrepareCommit or PrepareAbort. With `fence` (InitProducerId by a newer
        producer, or the transaction's timeout) the abort carries epoch + 1 (kept when
        exhausted), so the old producer is fenced by the markers too; Kafka passes through
        an in-memory PrepareEpochFence for this, which is `pending` while it is written."""
        state = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        cur = replace(self._current(), state=state, update_ms=now_ms)
        if fence:
            self._prepare(replace(cur, state=TxnState.PREPARE_EPOCH_FENCE))
            self.pending = None  # the fence is not written on its own: go on to the abort
            self.state = TxnState.PREPARE_EPOCH_FENCE
            epoch = self.producer_epoch if self.producer_epoch >= MAX_EPOCH else \
                self.producer_epoch + 1
            try:  # a fenced transaction ends as V1 would: retries of its epoch are fenced
                return self._prepare(replace(cur, producer_epoch=epoch, txn_version=0))
            finally:
                self.state = TxnState.ONGOING
        return self._prepare(cur)

    def prepare_complete(self, now_ms: int) -> TxnTransition:
        state = TxnState.COMPLETE_COMMIT if self.state == TxnState.PREPARE_COMMIT else \
            TxnState.COMPLETE_ABORT
        done = replace(self._current(), state=state, partitions=frozenset(), update_ms=now_ms)
        if self.txn_version >= 2 and self.next_producer_id != NO_PRODUCER_ID:
            done = replace(done, producer_id=self.next_producer_id,
                           last_producer_id=self.producer_id, producer_epoch=0,
                           last_producer_epoch=self.producer_epoch,
                           next_producer_id=NO_PRODUCER_ID)
        return self._prepare(done)

    def prepare_dead(self) -> TxnTransition:
        return self._prepare(replace(self._current(), state=TxnState.DEAD,
                                     partitions=frozenset()))
