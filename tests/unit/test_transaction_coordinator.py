"""strom.coordinator.transaction_coordinator on a ManualClock with real
`__transaction_state` logs and a fake marker channel: InitProducerId (epoch bumps,
fencing, timeouts), AddPartitionsToTxn, EndTxn and their error codes, markers then
completion, replay after a failover (a prepared transaction is completed by the new
coordinator), the timeout abort and the expiry of idle transactional ids."""

from __future__ import annotations

import asyncio

import pytest
from txn_fakes import TXN_PARTITIONS, TxnHarness, settle, topic

from strom.coordinator.transaction_coordinator import TRANSACTION_STATE_TOPIC
from strom.coordinator.transaction_metadata import TxnState
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


async def open_transaction(tmp_path, partitions, **config):
    """A loaded coordinator with transaction "tx" open on `partitions`:
    (harness, coordinator, producer id, epoch)."""
    h = TxnHarness(tmp_path, **config)
    c = await h.load()
    pid, epoch = await c.init_producer_id("tx", 60_000)
    await c.add_partitions("tx", pid, epoch, partitions)
    return h, c, pid, epoch


def test_commit_writes_markers_then_completes_and_replays(tmp_path):
    async def main():
        h = TxnHarness(tmp_path)
        c = await h.load()
        pid, epoch = await c.init_producer_id("tx", 60_000)
        assert epoch == 0
        await c.add_partitions("tx", pid, epoch, {T0})
        await c.add_partitions("tx", pid, epoch, {T0, T1})
        assert c.describe("tx").state == TxnState.ONGOING
        await c.end_txn("tx", pid, epoch, True)
        await settle()
        assert h.markers.written == [(pid, 0, 0, True, frozenset({T0, T1}))]
        txn = c.describe("tx")
        assert txn.state == TxnState.COMPLETE_COMMIT and not txn.partitions
        # a retried commit succeeds, an abort now is refused
        await c.end_txn("tx", pid, epoch, True)
        assert await code_of(c.end_txn("tx", pid, epoch, False)) == ErrorCode.invalid_txn_state
        again = await h.load(h.new_coordinator(leader_epoch=1))
        t2 = again.describe("tx")
        assert (t2.producer_id, t2.producer_epoch, t2.state) == (pid, 0,
                                                                  TxnState.COMPLETE_COMMIT)
        # the next InitProducerId bumps the epoch, keeping the producer id
        assert await again.init_producer_id("tx", 60_000) == (pid, 1)
    run(main())


def test_fencing_and_producer_errors(tmp_path):
    async def main():
        h, c, pid, e0 = await open_transaction(tmp_path, {T0})
        # a second producer with the same id: the open transaction is aborted with a
        # bumped epoch, the newcomer retries
        assert await code_of(c.init_producer_id("tx", 60_000)) == \
            ErrorCode.concurrent_transactions
        await settle()
        assert h.markers.written[-1] == (pid, e0 + 1, 0, False, frozenset({T0}))
        assert c.describe("tx").state == TxnState.COMPLETE_ABORT
        assert await c.init_producer_id("tx", 60_000) == (pid, e0 + 2)
        # the zombie is fenced
        assert await code_of(c.add_partitions("tx", pid, e0, {T0})) == \
            ErrorCode.producer_fenced
        assert await code_of(c.end_txn("tx", pid, e0, True)) == ErrorCode.producer_fenced
        assert await code_of(c.add_partitions("tx", pid + 1, e0 + 2, {T0})) == \
            ErrorCode.invalid_producer_id_mapping
        assert await code_of(c.add_partitions("nope", pid, 0, {T0})) == \
            ErrorCode.invalid_producer_id_mapping
        assert await code_of(c.end_txn("tx", pid, e0 + 2, True)) == \
            ErrorCode.invalid_txn_state  # Empty: no transaction
        assert await code_of(c.init_producer_id("tx", 0)) == \
            ErrorCode.invalid_transaction_timeout
        assert await code_of(c.init_producer_id("tx", 900_001)) == \
            ErrorCode.invalid_transaction_timeout
        assert await code_of(c.init_producer_id("", 1000)) == ErrorCode.invalid_request
        # KIP-360: the current producer recovering its epoch
        assert await c.init_producer_id("tx", 60_000, pid, e0 + 2) == (pid, e0 + 3)
        # its retry (the answer was lost) gets the same epoch, not another bump
        assert await c.init_producer_id("tx", 60_000, pid, e0 + 2) == (pid, e0 + 3)
        assert await code_of(c.init_producer_id("tx", 60_000, pid, e0)) == \
            ErrorCode.producer_fenced
    run(main())


def test_requests_while_markers_are_written_get_concurrent_transactions(tmp_path):
    async def main():
        h, c, pid, epoch = await open_transaction(tmp_path, {T0})
        h.markers.hold = True
        await c.end_txn("tx", pid, epoch, False)
        assert c.describe("tx").state == TxnState.PREPARE_ABORT
        assert await code_of(c.add_partitions("tx", pid, epoch, {T1})) == \
            ErrorCode.concurrent_transactions
        assert await code_of(c.end_txn("tx", pid, epoch, False)) == \
            ErrorCode.concurrent_transactions
        assert await code_of(c.end_txn("tx", pid, epoch, True)) == \
            ErrorCode.invalid_txn_state
        assert await code_of(c.init_producer_id("tx", 60_000)) == \
            ErrorCode.concurrent_transactions
        assert c.verify_partitions("tx", pid, epoch, [T0]) == \
            {T0: ErrorCode.invalid_txn_state}
        h.markers.hold = False
        h.markers.release()
        await settle()
        assert c.describe("tx").state == TxnState.COMPLETE_ABORT
    run(main())


def test_a_new_coordinator_completes_a_prepared_commit(tmp_path):
    async def main():
        h, c, pid, epoch = await open_transaction(tmp_path, {T0, T1})
        h.markers.hold = True
        await c.end_txn("tx", pid, epoch, True)
        await c.stop()  # the old coordinator dies before the markers
        h.markers.hold = False
        new = await h.load(h.new_coordinator(leader_epoch=5))
        await settle()
        assert h.markers.written == [(pid, epoch, 5, True, frozenset({T0, T1}))]
        assert new.describe("tx").state == TxnState.COMPLETE_COMMIT
    run(main())


def test_verify_partitions_for_produce(tmp_path):
    async def main():
        h, c, pid, epoch = await open_transaction(tmp_path, {T0})
        assert await c.verify_for_produce("tx", pid, epoch, "t", 0) == ErrorCode.none
        assert await c.verify_for_produce("tx", pid, epoch, "t", 1) == \
            ErrorCode.invalid_txn_state
        assert await c.verify_for_produce("tx", pid, epoch - 1, "t", 0) == \
            ErrorCode.invalid_producer_epoch
        c.partitions[c.partition_for("tx")].loading = True
        assert await c.verify_for_produce("tx", pid, epoch, "t", 0) == \
            ErrorCode.not_enough_replicas
    run(main())


def test_not_coordinator_and_load_in_progress(tmp_path):
    async def main():
        h = TxnHarness(tmp_path)
        c = h.coordinator
        h.cache.topics[TRANSACTION_STATE_TOPIC] = topic(TRANSACTION_STATE_TOPIC,
                                                        TXN_PARTITIONS, leader=2)
        assert await code_of(c.init_producer_id("tx", 1000)) == ErrorCode.not_coordinator
        h.cache.topics[TRANSACTION_STATE_TOPIC] = topic(TRANSACTION_STATE_TOPIC,
                                                        TXN_PARTITIONS)
        c._on_topics_changed({"__transaction_state"})
        assert await code_of(c.init_producer_id("tx", 1000)) == \
            ErrorCode.coordinator_load_in_progress
        with pytest.raises(KafkaError) as e:
            c.list_transactions()
        assert e.value.code == ErrorCode.coordinator_load_in_progress
    run(main())


def test_a_partition_led_but_not_loaded_is_loaded_when_asked_for(tmp_path):
    # The metadata names this broker leader of the id's partition, but the coordinator was
    # never told (a metadata change it missed): it used to answer NOT_COORDINATOR while
    # FindCoordinator kept sending the client here, until the topic changed again.
    async def main():
        h = TxnHarness(tmp_path)
        c = h.coordinator
        assert not c.partitions
        assert await code_of(c.init_producer_id("tx", 1000)) == \
            ErrorCode.coordinator_load_in_progress
        await settle()
        pid, epoch = await c.init_producer_id("tx", 1000)
        assert epoch == 0 and c.describe("tx").producer_id == pid
    run(main())


def test_timed_out_transactions_are_aborted_and_idle_ids_expire(tmp_path):
    async def main():
        h = TxnHarness(tmp_path, transactional_id_expiration_ms=100_000)
        c = await h.load()
        pid, epoch = await c.init_producer_id("tx", 10_000)
        await c.add_partitions("tx", pid, epoch, {T0})
        idle, _ = await c.init_producer_id("idle", 10_000)
        h.clock.advance(9_000)
        await c.abort_timed_out()
        assert c.describe("tx").state == TxnState.ONGOING
        h.clock.advance(2_000)
        await c.abort_timed_out()
        await settle()
        txn = c.describe("tx")
        assert txn.state == TxnState.COMPLETE_ABORT and txn.producer_epoch == epoch + 1
        assert await code_of(c.add_partitions("tx", pid, epoch, {T0})) == \
            ErrorCode.producer_fenced
        assert [t.transactional_id for t in c.list_transactions()] == ["idle", "tx"]
        assert [t.transactional_id for t in c.list_transactions(
            {TxnState.EMPTY})] == ["idle"]
        assert [t.producer_id for t in c.list_transactions(producer_ids={idle})] == [idle]
        # open for 11 s: longer than 10 s, not than 11 s
        assert [t.transactional_id for t in c.list_transactions(
            {TxnState.COMPLETE_ABORT}, min_duration_ms=10_000)] == ["tx"]
        assert c.list_transactions({TxnState.COMPLETE_ABORT}, min_duration_ms=11_000) == []
        h.clock.advance(95_000)
        await c.expire_transactional_ids()  # "idle" was last updated 106 s ago
        assert [t.transactional_id for t in c.list_transactions()] == ["tx"]
        again = await h.load(h.new_coordinator(leader_epoch=1))
        with pytest.raises(KafkaError) as e:
            again.describe("idle")
        assert e.value.code == ErrorCode.transactional_id_not_found
        assert again.describe("tx").state == TxnState.COMPLETE_ABORT
    run(main())
