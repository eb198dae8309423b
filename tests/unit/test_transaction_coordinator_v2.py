"""Transactions V2 (KIP-890 part 2) in strom.coordinator.transaction_coordinator, on a
ManualClock with real `__transaction_state` logs and a fake marker channel: EndTxn v5
bumps the epoch (markers carry the bumped one), a retry with the previous epoch succeeds,
the old epoch is fenced, an exhausted epoch moves to a new producer id, partitions added
by a Produce v12 leader (`verify_for_produce(add=True)`), and V1 left as it was."""

from __future__ import annotations

import asyncio

from txn_fakes import TxnHarness, settle

from strom.coordinator.transaction_metadata import MAX_EPOCH, TxnState
from strom.protocol.errors import ErrorCode, KafkaError

T0, T1 = ("t", 0), ("t", 1)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def code_of(coro) -> ErrorCode:
    try:
        await coro
    except KafkaError as e:
        return e.code
    return ErrorCode.none


async def started(tmp_path):
    h = TxnHarness(tmp_path)
    c = await h.load()
    pid, epoch = await c.init_producer_id("tx", 60_000)
    return h, c, pid, epoch


def test_end_txn_v2_bumps_the_epoch_and_retries_succeed(tmp_path):
    async def main():
        h, c, pid, e0 = await started(tmp_path)
        # the leader adds the partitions: no AddPartitionsToTxn from the client
        assert await c.verify_for_produce("tx", pid, e0, "t", 0, True) == ErrorCode.none
        assert await c.verify_for_produce("tx", pid, e0, "t", 1, True) == ErrorCode.none
        txn = c.describe("tx")
        assert txn.state == TxnState.ONGOING and txn.partitions == {T0, T1}
        assert txn.txn_version == 2
        assert await c.end_txn("tx", pid, e0, True, v2=True) == (pid, e0 + 1)
        await settle()
        assert h.markers.written == [(pid, e0 + 1, 0, True, frozenset({T0, T1}))]
        assert c.describe("tx").state == TxnState.COMPLETE_COMMIT
        # a retry with the previous epoch succeeds; the same kind only
        assert await c.end_txn("tx", pid, e0, True, v2=True) == (pid, e0 + 1)
        assert await code_of(c.end_txn("tx", pid, e0, False, v2=True)) == \
            ErrorCode.invalid_txn_state
        # an EndTxn of the new epoch with nothing open: as Kafka, PRODUCER_FENCED
        assert await code_of(c.end_txn("tx", pid, e0 + 1, True, v2=True)) == \
            ErrorCode.producer_fenced
        # next transaction at the bumped epoch, aborted: epoch + 2
        assert await c.verify_for_produce("tx", pid, e0 + 1, "t", 0, True) == ErrorCode.none
        assert await c.end_txn("tx", pid, e0 + 1, False, v2=True) == (pid, e0 + 2)
        await settle()
        assert h.markers.written[-1] == (pid, e0 + 2, 0, False, frozenset({T0}))
        assert c.describe("tx").state == TxnState.COMPLETE_ABORT
        # the epoch before is fenced, for EndTxn and for the leader's add
        assert await code_of(c.end_txn("tx", pid, e0, False, v2=True)) == \
            ErrorCode.producer_fenced
        assert await c.verify_for_produce("tx", pid, e0, "t", 0, True) == \
            ErrorCode.invalid_producer_epoch
        assert await code_of(c.end_txn("tx", pid + 7, e0 + 2, True, v2=True)) == \
            ErrorCode.invalid_producer_id_mapping
    run(main())


def test_end_txn_v2_while_prepared_is_concurrent_or_fenced(tmp_path):
    async def main():
        h, c, pid, e0 = await started(tmp_path)
        h.markers.hold = True
        assert await c.verify_for_produce("tx", pid, e0, "t", 0, True) == 0
        assert await c.end_txn("tx", pid, e0, True, v2=True) == (pid, e0 + 1)
        await settle()
        txn = c.describe("tx")
        assert txn.state == TxnState.PREPARE_COMMIT and txn.producer_epoch == e0 + 1
        # the leader cannot add while the previous transaction completes
        assert await c.verify_for_produce("tx", pid, e0 + 1, "t", 0, True) == \
            ErrorCode.not_enough_replicas
        assert await code_of(c.end_txn("tx", pid, e0, True, v2=True)) == \
            ErrorCode.concurrent_transactions
        assert await code_of(c.end_txn("tx", pid, e0, False, v2=True)) == \
            ErrorCode.invalid_txn_state
        assert await code_of(c.end_txn("tx", pid, e0 + 1, True, v2=True)) == \
            ErrorCode.producer_fenced
        h.markers.release()
        await settle()
        assert c.describe("tx").state == TxnState.COMPLETE_COMMIT
    run(main())


def test_exhausted_epoch_moves_to_a_new_producer_id(tmp_path):
    async def main():
        h, c, pid, _ = await started(tmp_path)
        txn = c.describe("tx")
        txn.producer_epoch = MAX_EPOCH - 1
        assert await c.verify_for_produce("tx", pid, MAX_EPOCH - 1, "t", 0, True) == 0
        new_pid, epoch = await c.end_txn("tx", pid, MAX_EPOCH - 1, True, v2=True)
        assert new_pid != pid and epoch == 0
        await settle()
        # markers carry the old producer id at the last epoch
        assert h.markers.written == [(pid, MAX_EPOCH, 0, True, frozenset({T0}))]
        txn = c.describe("tx")
        assert (txn.producer_id, txn.producer_epoch, txn.state) == \
            (new_pid, 0, TxnState.COMPLETE_COMMIT)
        # a retry from the old producer id succeeds with the new one
        assert await c.end_txn("tx", pid, MAX_EPOCH - 1, True, v2=True) == (new_pid, 0)
        assert await c.verify_for_produce("tx", new_pid, 0, "t", 1, True) == 0
        assert await c.end_txn("tx", new_pid, 0, True, v2=True) == (new_pid, 1)
    run(main())


def test_v1_end_and_verification_unchanged(tmp_path):
    async def main():
        h, c, pid, e0 = await started(tmp_path)
        # V1: verification only, the partition is not added
        assert await c.verify_for_produce("tx", pid, e0, "t", 0) == \
            ErrorCode.invalid_txn_state
        await c.add_partitions("tx", pid, e0, {T0})
        assert await c.end_txn("tx", pid, e0, True) == (pid, e0)
        await settle()
        assert h.markers.written == [(pid, e0, 0, True, frozenset({T0}))]
        await c.end_txn("tx", pid, e0, True)  # retried with the same epoch
        assert c.describe("tx").producer_epoch == e0
    run(main())


def test_timeout_abort_of_a_v2_transaction_fences_its_epoch(tmp_path):
    async def main():
        h, c, pid, e0 = await started(tmp_path)
        assert await c.verify_for_produce("tx", pid, e0, "t", 0, True) == 0
        h.clock.advance(61_000)
        await c.abort_timed_out()
        await settle()
        assert c.describe("tx").state == TxnState.COMPLETE_ABORT
        assert c.describe("tx").producer_epoch == e0 + 1
        assert await code_of(c.end_txn("tx", pid, e0, False, v2=True)) == \
            ErrorCode.producer_fenced
    run(main())


def test_v2_state_survives_a_coordinator_move(tmp_path):
    async def main():
        h, c, pid, _ = await started(tmp_path)
        c.describe("tx").producer_epoch = MAX_EPOCH - 1
        assert await c.verify_for_produce("tx", pid, MAX_EPOCH - 1, "t", 0, True) == 0
        h.markers.hold = True
        new_pid, epoch = await c.end_txn("tx", pid, MAX_EPOCH - 1, True, v2=True)
        assert epoch == 0
        await settle()
        # a new coordinator replays PrepareCommit (written as a v1 value) and completes it
        h.markers.hold = False
        h.markers.release()
        again = await h.load(h.new_coordinator(leader_epoch=1))
        await settle()
        txn = again.describe("tx")
        assert (txn.producer_id, txn.producer_epoch, txn.state, txn.txn_version) == \
            (new_pid, 0, TxnState.COMPLETE_COMMIT, 2)
        # the retry from the old producer id is still recognised
        assert await again.end_txn("tx", pid, MAX_EPOCH - 1, True, v2=True) == (new_pid, 0)
    run(main())
