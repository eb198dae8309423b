"""The transaction coordinator's state machine against a model, with hypothesis: one
transactional id driven by InitProducerId, AddPartitionsToTxn, EndTxn (commit/abort),
stale epochs, held-back markers, the timeout abort and coordinator failovers (a new
coordinator replays `__transaction_state`). After every step the coordinator's state,
epoch and partitions match the model, every answer is the code Kafka gives, the epoch
never goes back, and a replay of the log gives the same transaction."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from txn_fakes import TxnHarness, settle

from strom.coordinator.transaction_metadata import TxnState
from strom.protocol.errors import ErrorCode, KafkaError

TXN = "tx"
TIMEOUT_MS = 10_000
PARTITIONS = st.sets(st.tuples(st.just("t"), st.integers(0, 2)), min_size=1, max_size=3)
PREPARED = (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT)
ENDED = (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)


class TransactionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="txn-sm-"))
        self.h = TxnHarness(self.dir)
        self.h.markers.hold = True  # markers complete only in `markers_done`
        self.coordinator_epoch = 0
        self.run(self.h.load())
        # the model
        self.state: TxnState | None = None
        self.pid = -1
        self.epoch = -1
        self.partitions: set = set()

    def teardown(self) -> None:
        self.run(self.h.coordinator.stop())
        pending = asyncio.all_tasks(self.loop)
        if pending:  # the logs' off-loop epoch checkpoints
            self.loop.run_until_complete(asyncio.wait(pending, timeout=5))
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, 10))

    def call(self, coro) -> tuple[ErrorCode, object]:
        async def go():
            try:
                return ErrorCode.none, await coro
            except KafkaError as e:
                return e.code, None
        return self.run(go())

    @property
    def c(self):
        return self.h.coordinator

    # --- rules -------------------------------------------------------------------------
    @rule()
    def init_producer_id(self) -> None:
        code, got = self.call(self.c.init_producer_id(TXN, TIMEOUT_MS))
        if self.state in PREPARED:
            assert code == ErrorCode.concurrent_transactions
        elif self.state == TxnState.ONGOING:  # fenced: aborted with epoch + 1
            assert code == ErrorCode.concurrent_transactions
            self.state, self.epoch = TxnState.PREPARE_ABORT, self.epoch + 1
        else:
            assert code == ErrorCode.none
            if self.state is None:
                self.pid = got[0]
            assert got == (self.pid, self.epoch + 1)
            self.state, self.epoch, self.partitions = TxnState.EMPTY, self.epoch + 1, set()

    @precondition(lambda self: self.state is not None)
    @rule(partitions=PARTITIONS, stale=st.booleans())
    def add_partitions(self, partitions, stale) -> None:
        epoch = self.epoch - 1 if stale else self.epoch
        code, _ = self.call(self.c.add_partitions(TXN, self.pid, epoch, set(partitions)))
        if stale:
            assert code == ErrorCode.producer_fenced
        elif self.state in PREPARED:
            assert code == ErrorCode.concurrent_transactions
        else:
            assert code == ErrorCode.none
            if self.state != TxnState.ONGOING:
                self.partitions = set()
            self.state = TxnState.ONGOING
            self.partitions |= partitions

    @precondition(lambda self: self.state is not None)
    @rule(commit=st.booleans(), stale=st.booleans())
    def end_txn(self, commit, stale) -> None:
        epoch = self.epoch - 1 if stale else self.epoch
        code, _ = self.call(self.c.end_txn(TXN, self.pid, epoch, commit))
        wanted = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        done = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        if stale:
            assert code == ErrorCode.producer_fenced
        elif self.state == TxnState.ONGOING:
            assert code == ErrorCode.none
            self.state = wanted
        elif self.state == wanted:
            assert code == ErrorCode.concurrent_transactions
        elif self.state == done:
            assert code == ErrorCode.none  # a retry
        else:
            assert code == ErrorCode.invalid_txn_state

    @rule()
    def markers_done(self) -> None:
        self.h.markers.release()
        self.run(settle())
        if self.state in PREPARED:
            commit = self.state == TxnState.PREPARE_COMMIT
            assert self.h.markers.written[-1][:4] == (self.pid, self.epoch,
                                                      self.coordinator_epoch, commit)
            assert self.h.markers.written[-1][4] == frozenset(self.partitions)
            self.state = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
            self.partitions = set()

    @precondition(lambda self: self.state == TxnState.ONGOING)
    @rule()
    def time_out(self) -> None:
        self.h.clock.advance(TIMEOUT_MS + 1)
        self.run(self.c.abort_timed_out())
        self.state, self.epoch = TxnState.PREPARE_ABORT, self.epoch + 1

    @rule()
    def failover(self) -> None:
        self.run(self.c.stop())
        self.coordinator_epoch += 1
        self.run(self.h.load(self.h.new_coordinator(self.coordinator_epoch)))

    # --- invariants --------------------------------------------------------------------
    @invariant()
    def matches_the_model(self) -> None:
        txn = self.c.partitions[self.c.partition_for(TXN)].txns.get(TXN)
        if self.state is None:
            assert txn is None
            return
        assert (txn.state, txn.producer_id, txn.producer_epoch) == \
            (self.state, self.pid, self.epoch)
        assert txn.pending is None
        assert txn.partitions == self.partitions
        assert bool(txn.partitions) == (txn.state not in ENDED)


TransactionMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25,
                                                deadline=None)
test_transaction_state_machine = TransactionMachine.TestCase
