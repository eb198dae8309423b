"""TransactionCoordinator: Kafka's transaction coordinator.

A transactional id belongs to partition `abs(javaHash(id)) % transaction.state.log.num.
partitions` of `__transaction_state` (internal_topic.py); the leader of that partition coordinates it, with the
partition's leader epoch as its coordinator epoch. Every change of a transaction
(transaction_metadata.py) is written there (transaction_log.py) with acks=all before it is
applied and answered, and replayed when the partition is loaded (start-up, or on becoming
its leader); until then the ids get COORDINATOR_LOAD_IN_PROGRESS, and NOT_COORDINATOR once
the partition is gone. A loaded transaction in PrepareCommit or PrepareAbort has its
markers written again and is completed, so a failover never leaves one half done.

EndTxn is answered once PrepareCommit/PrepareAbort is written; the markers are then written
by a task (transaction_markers.py) that ends by writing CompleteCommit/CompleteAbort.
A periodic task aborts transactions past their timeout (fencing the producer with an epoch
bump, as Kafka does for Transactions V1) and removes ids idle for
`transactional.id.expiration.ms` with a tombstone.

Owned by the event loop: `partitions` and every TransactionMetadata change only here.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from strom.clock import Clock
from strom.cluster.controller import Controller, NewTopic
from strom.cluster.metadata_cache import MetadataCache
from strom.config import BrokerConfig
from strom.coordinator import transaction_log as txlog
from strom.coordinator.internal_topic import InternalTopic
from strom.coordinator.transaction_markers import MarkersFenced, TxnMarkerChannel
from strom.coordinator.transaction_metadata import (
    MAX_EPOCH,
    NO_PRODUCER_ID,
    TransactionMetadata,
    TxnState,
    TxnTransition,
)
from strom.log.records import NewRecord, build_batch, decode_batch
from strom.protocol.client import BrokerConnectionError
from strom.protocol.errors import ErrorCode, KafkaError, kafka_error
from strom.protocol.messages import make, request_module, request_schema
from strom.replication.replica_manager import ReplicaManager
from strom.tasks import essential, run_forever, run_until_done, spawn

log = logging.getLogger(__name__)

TRANSACTION_STATE_TOPIC = "__transaction_state"
TIMER_INTERVAL_S = 0.5
ADD_PARTITIONS_TO_TXN = 24
VERIFY_VERSION = 4  # the first batched, broker-to-broker version (KIP-890)
ADD_VERSION = 5  # a Produce v12 leader adding a partition (Transactions V2)


@dataclass(eq=False)
class TxnPartition:
    """One `__transaction_state` partition this broker leads."""

    coordinator_epoch: int
    loading: bool = True
    txns: dict[str, TransactionMetadata] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)  # its loader and marker tasks


@dataclass(frozen=True, slots=True)
class TxnListing:
    transactional_id: str
    producer_id: int
    state: str


class TransactionCoordinator:
    def __init__(self, broker_id: int, config: BrokerConfig, clock: Clock,
                 cache: MetadataCache, controller: Controller | None,
                 replicas: ReplicaManager, new_producer_id: Callable[[], Awaitable[int]],
                 markers: TxnMarkerChannel | None = None) -> None:
        self.broker_id = broker_id
        self.config = config
        self.clock = clock
        self.cache = cache
        self.controller = controller
        self.replicas = replicas
        self.new_producer_id = new_producer_id
        self.markers = markers or TxnMarkerChannel(broker_id, config, cache, replicas)
        self.partitions: dict[int, TxnPartition] = {}
        # transaction-coordinator-metrics (read by strom.metrics): partition load times
        self.partitions_loaded = 0
        self.partition_load_time_max_ms = 0.0
        self.partition_load_time_total_ms = 0.0
        self._timer: asyncio.Task | None = None
        self.topic = InternalTopic(
            TRANSACTION_STATE_TOPIC, cache, controller,
            config.get("transaction.state.log.num.partitions"), self._new_topic)
        self._last_abort_check = 0.0
        self._last_expiry_check = 0.0
        cache.on_change(self._on_topics_changed)

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._on_topics_changed({TRANSACTION_STATE_TOPIC})
        self._last_abort_check = self._last_expiry_check = self.clock.monotonic()
        self._timer = essential(spawn(
            run_forever(self._timers, "Transaction timers", TIMER_INTERVAL_S),
            "transaction-timers"))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for state in self.partitions.values():
            for task in list(state.tasks):
                task.cancel()
        await self.markers.close()

    def _new_topic(self, live_brokers: int) -> NewTopic:
        rf = min(self.config.get("transaction.state.log.replication.factor"), live_brokers)
        return NewTopic(
            TRANSACTION_STATE_TOPIC, self.config.get("transaction.state.log.num.partitions"),
            rf, None,
            {"cleanup.policy": "compact", "compression.type": "uncompressed",
             "min.insync.replicas": str(min(self.config.get("transaction.state.log.min.isr"),
                                            rf)),
             "unclean.leader.election.enable": "false",
             "segment.bytes": str(self.config.get("transaction.state.log.segment.bytes"))})

    def partition_for(self, transactional_id: str) -> int:
        return self.topic.partition_for(transactional_id)

    async def find_coordinator(self, transactional_id: str) -> int:
        """The broker coordinating `transactional_id`; creates __transaction_state on first
        use. Raises COORDINATOR_NOT_AVAILABLE while the partition has no leader."""
        return await self.topic.find_coordinator(transactional_id)

    def coordinator_of(self, transactional_id: str) -> int:
        return self.topic.coordinator_of(transactional_id)

    # --- partition loading -------------------------------------------------------------
    def _on_topics_changed(self, topics: set[str]) -> None:
        if TRANSACTION_STATE_TOPIC not in topics:
            return
        info = self.cache.topic(TRANSACTION_STATE_TOPIC)
        led: dict[int, int] = {}
        if info is not None:
            for p, pinfo in info.partitions.items():
                replica = self.replicas.partitions.get((TRANSACTION_STATE_TOPIC, p))
                if pinfo.leader == self.broker_id and replica is not None:
                    led[p] = replica.leader_epoch
        for p, state in list(self.partitions.items()):
            if led.get(p) != state.coordinator_epoch:
                self._unload(p, info.partitions.get(p) if info is not None else None)
        for p in sorted(set(led) - set(self.partitions)):
            state = TxnPartition(led[p])
            self.partitions[p] = state
            spawn(run_until_done(lambda p=p, state=state: self._load(p, state),
                                 f"Loading transactions of {TRANSACTION_STATE_TOPIC}-{p}"),
                  f"txn-loader-{p}", state.tasks)

    def _unload(self, p: int, now=None) -> None:
        """Another broker (or this one at a newer epoch) coordinates the partition now:
        its loader and marker tasks stop; the new coordinator completes what they did
        not. `now` is the partition's PartitionInfo as the cache has it (for the log)."""
        state = self.partitions.pop(p)
        for task in list(state.tasks):
            task.cancel()
        log.info("Unloaded %d transactional ids of %s-%d (coordinator epoch %d; the leader "
                 "is now %s at epoch %s)", len(state.txns), TRANSACTION_STATE_TOPIC, p,
                 state.coordinator_epoch, now.leader if now else "unknown",
                 now.state.leader_epoch if now else "unknown")

    async def _load(self, p: int, state: TxnPartition) -> None:
        replica = self.replicas.partitions.get((TRANSACTION_STATE_TOPIC, p))
        if replica is None or self.partitions.get(p) is not state:
            return
        plog = replica.log
        started = self.clock.monotonic()
        end = plog.log_end_offset  # as Kafka: the leader's whole log
        values: dict[str, txlog.TxnLogValue | None] = {}
        count = 0
        for seg, bp in plog.batches_from(plog.log_start_offset, end):
            if bp.header.is_control:
                continue
            for rec in decode_batch(seg.read_bytes(bp.position, bp.header.size)).records:
                if rec.key is None:
                    continue
                try:
                    txn_id = txlog.read_key(rec.key)
                    values[txn_id] = None if rec.value is None else txlog.read_value(rec.value)
                except txlog.FormatError as e:
                    log.warning("Skipping unreadable record at offset %d of %s-%d: %s",
                                rec.offset, TRANSACTION_STATE_TOPIC, p, e)
            count += 1
            if count % 100 == 0:
                await asyncio.sleep(0)
                if self.partitions.get(p) is not state:
                    return
        if self.partitions.get(p) is not state:
            return
        for txn_id, v in values.items():
            if v is None or v.status == TxnState.DEAD:
                continue
            state.txns[txn_id] = TransactionMetadata(
                txn_id, v.producer_id, v.producer_epoch, v.timeout_ms, TxnState(v.status),
                partitions=set(v.partitions), start_ms=v.start_ms,
                last_update_ms=v.last_update_ms, last_producer_id=v.previous_producer_id,
                next_producer_id=v.next_producer_id, txn_version=v.txn_version)
        state.loading = False
        took_ms = (self.clock.monotonic() - started) * 1000
        self.partitions_loaded += 1
        self.partition_load_time_total_ms += took_ms
        self.partition_load_time_max_ms = max(self.partition_load_time_max_ms, took_ms)
        log.info("Loaded %d transactional ids from %s-%d (coordinator epoch %d)",
                 len(state.txns), TRANSACTION_STATE_TOPIC, p, state.coordinator_epoch)
        for txn in state.txns.values():
            if txn.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
                self._spawn_markers(p, state, txn)

    def _leads(self, p: int) -> bool:
        """Whether this broker leads partition `p`, in the metadata and as its replica."""
        info = self.cache.partition(TRANSACTION_STATE_TOPIC, p)
        replica = self.replicas.partitions.get((TRANSACTION_STATE_TOPIC, p))
        return info is not None and info.leader == self.broker_id and replica is not None \
            and replica.leader_epoch == info.state.leader_epoch

    def _owner(self, transactional_id: str) -> tuple[int, TxnPartition]:
        if not transactional_id:
            raise kafka_error(ErrorCode.invalid_request, "The transactional id is empty")
        p = self.partition_for(transactional_id)
        state = self.partitions.get(p)
        if state is None:
            if self._leads(p):
                # the metadata says this broker leads it, yet it was never loaded: a
                # change this coordinator was not told of. Load it now rather than answer
                # NOT_COORDINATOR to clients that FindCoordinator keeps sending here.
                log.warning("%s-%d is led by this broker but was not loaded: loading it "
                            "now", TRANSACTION_STATE_TOPIC, p)
                self._on_topics_changed({TRANSACTION_STATE_TOPIC})
                raise kafka_error(ErrorCode.coordinator_load_in_progress)
            raise kafka_error(ErrorCode.not_coordinator)
        if state.loading:
            raise kafka_error(ErrorCode.coordinator_load_in_progress)
        return p, state

    # --- persistence ------------------------------------------------------------------
    async def _write(self, p: int, state: TxnPartition, txn: TransactionMetadata,
                     t: TxnTransition) -> None:
        """Write `t` (prepared on `txn`) and apply it; on failure drop it and raise."""
        value = None if t.state == TxnState.DEAD else txlog.txn_value(txlog.TxnLogValue(
            t.producer_id, t.producer_epoch, t.timeout_ms, int(t.state),
            tuple(sorted(t.partitions)), t.update_ms, t.start_ms, t.last_producer_id,
            t.next_producer_id, t.txn_version))
        batch = build_batch([NewRecord(key=txlog.txn_key(txn.transactional_id), value=value,
                                       timestamp=self.clock.now_ms())])
        try:
            await self.topic.append(self.replicas, p, batch,
                                    self.config.get("replica.socket.timeout.ms"))
        except KafkaError as e:
            txn.abort_pending()
            log.warning("Could not write transaction %s to %s-%d: %s", txn.transactional_id,
                        TRANSACTION_STATE_TOPIC, p, e)
            if e.code in (ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error):
                raise kafka_error(ErrorCode.not_coordinator) from None
            if e.code in (ErrorCode.message_too_large, ErrorCode.record_list_too_large):
                raise kafka_error(ErrorCode.unknown_server_error) from None
            raise kafka_error(ErrorCode.coordinator_not_available) from None
        except BaseException:
            txn.abort_pending()
            raise
        if self.partitions.get(p) is not state:
            txn.abort_pending()
            raise kafka_error(ErrorCode.not_coordinator)
        txn.complete(t)

    # --- InitProducerId ----------------------------------------------------------------
    async def init_producer_id(self, transactional_id: str, timeout_ms: int,
                               producer_id: int = NO_PRODUCER_ID, producer_epoch: int = -1
                               ) -> tuple[int, int]:
        """(producer id, epoch) for a transactional producer. Raises
        INVALID_TRANSACTION_TIMEOUT, CONCURRENT_TRANSACTIONS (an open transaction is being
        aborted: retry), PRODUCER_FENCED, NOT_COORDINATOR..."""
        if timeout_ms <= 0 or timeout_ms > self.config.get("transaction.max.timeout.ms"):
            raise kafka_error(ErrorCode.invalid_transaction_timeout,
                              f"The transaction timeout {timeout_ms} ms is not in 1.."
                              f"{self.config.get('transaction.max.timeout.ms')}")
        p, state = self._owner(transactional_id)
        txn = state.txns.get(transactional_id)
        if txn is None:
            pid = await self.new_producer_id()
            p, state = self._owner(transactional_id)  # it may have moved meanwhile
            txn = state.txns.setdefault(transactional_id, TransactionMetadata(
                transactional_id, pid, -1, timeout_ms))
        if txn.pending is not None or txn.state in (
                TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT, TxnState.DEAD,
                TxnState.PREPARE_EPOCH_FENCE):
            raise kafka_error(ErrorCode.concurrent_transactions)
        if producer_id != NO_PRODUCER_ID:  # KIP-360: a producer recovering its epoch
            current = producer_id == txn.producer_id and producer_epoch in (
                txn.producer_epoch, txn.last_producer_epoch)
            previous = producer_id == txn.last_producer_id and \
                producer_epoch == txn.last_producer_epoch
            if not (current or previous):
                raise kafka_error(ErrorCode.producer_fenced)
            retry = previous or (producer_epoch == txn.last_producer_epoch !=
                                 txn.producer_epoch and txn.state == TxnState.EMPTY)
            if retry:  # its earlier InitProducerId bumped (or rotated) already
                return txn.producer_id, txn.producer_epoch
        if txn.state == TxnState.ONGOING:
            await self._end(p, state, txn, commit=False, fence=True)
            raise kafka_error(ErrorCode.concurrent_transactions,
                              "An open transaction is being aborted")
        new_pid = None
        if txn.producer_epoch >= MAX_EPOCH - 1:
            new_pid = await self.new_producer_id()
            self._owner(transactional_id)
        t = txn.prepare_init(new_pid, timeout_ms, self.clock.now_ms())
        await self._write(p, state, txn, t)
        return txn.producer_id, txn.producer_epoch

    # --- AddPartitionsToTxn, AddOffsetsToTxn --------------------------------------------
    def _check_producer(self, state: TxnPartition, transactional_id: str, producer_id: int,
                        producer_epoch: int) -> TransactionMetadata:
        txn = state.txns.get(transactional_id)
        if txn is None or txn.producer_id != producer_id:
            raise kafka_error(ErrorCode.invalid_producer_id_mapping)
        if txn.producer_epoch != producer_epoch:
            raise kafka_error(ErrorCode.producer_fenced)
        return txn

    async def add_partitions(self, transactional_id: str, producer_id: int,
                             producer_epoch: int, partitions: set[tuple[str, int]],
                             txn_version: int | None = None) -> None:
        """AddPartitionsToTxn; `txn_version` 2 when a Produce v12 leader adds a partition
        for the producer (Transactions V2: the client sends no AddPartitionsToTxn)."""
        p, state = self._owner(transactional_id)
        txn = self._check_producer(state, transactional_id, producer_id, producer_epoch)
        if txn.pending is not None or txn.state in (
                TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT,
                TxnState.PREPARE_EPOCH_FENCE, TxnState.DEAD):
            raise kafka_error(ErrorCode.concurrent_transactions)
        if txn.state == TxnState.ONGOING and partitions <= txn.partitions:
            return
        t = txn.prepare_add_partitions(partitions, self.clock.now_ms(), txn_version)
        await self._write(p, state, txn, t)

    def verify_partitions(self, transactional_id: str, producer_id: int,
                          producer_epoch: int, partitions: list[tuple[str, int]]
                          ) -> dict[tuple[str, int], ErrorCode]:
        """AddPartitionsToTxn verifyOnly (KIP-890): NONE for each partition in the
        producer's ongoing transaction, INVALID_TXN_STATE for the others. Raises for the
        whole transaction (wrong producer, fenced, NOT_COORDINATOR...)."""
        _, state = self._owner(transactional_id)
        txn = self._check_producer(state, transactional_id, producer_id, producer_epoch)
        ongoing = txn.state == TxnState.ONGOING
        return {tp: ErrorCode.none if ongoing and tp in txn.partitions else
                ErrorCode.invalid_txn_state for tp in partitions}

    async def verify_for_produce(self, transactional_id: str, producer_id: int,
                                 producer_epoch: int, topic: str, partition: int,
                                 add: bool = False) -> int:
        """`ReplicaManager.txn_verifier` (KIP-890 part 1): whether a transactional batch
        for a partition the producer has no open transaction on may be appended. Asks the
        transaction's coordinator (this broker, or AddPartitionsToTxn v4 verify_only) and
        answers Produce's code: 0, INVALID_TXN_STATE (not added), INVALID_PRODUCER_EPOCH,
        INVALID_PRODUCER_ID_MAPPING, or NOT_ENOUGH_REPLICAS (retriable) while the coordinator cannot answer.
        With `add` (Produce v12, Transactions V2) the partition is added to the
        transaction instead (AddPartitionsToTxn v5 from this broker when remote)."""
        tp = (topic, partition)
        try:
            node = self.coordinator_of(transactional_id)
            if node == self.broker_id and add:
                await self.add_partitions(transactional_id, producer_id, producer_epoch,
                                          {tp}, txn_version=2)
                code = ErrorCode.none
            elif node == self.broker_id:
                code = self.verify_partitions(transactional_id, producer_id, producer_epoch,
                                              [tp])[tp]
            else:
                code = await self._verify_remote(node, transactional_id, producer_id,
                                                 producer_epoch, tp, add)
        except KafkaError as e:
            code = e.code
        except BrokerConnectionError as e:
            log.info("Could not verify %s with its coordinator: %s", transactional_id, e)
            code = ErrorCode.coordinator_not_available
        if code == ErrorCode.producer_fenced:  # Produce knows only the older code
            return ErrorCode.invalid_producer_epoch
        if code in (ErrorCode.not_coordinator, ErrorCode.coordinator_not_available,
                    ErrorCode.coordinator_load_in_progress,
                    ErrorCode.concurrent_transactions):
            return ErrorCode.not_enough_replicas
        return code

    async def _verify_remote(self, node: int, transactional_id: str, producer_id: int,
                             producer_epoch: int, tp: tuple[str, int], add: bool) -> int:
        version = ADD_VERSION if add else VERIFY_VERSION
        mod = request_module(ADD_PARTITIONS_TO_TXN, version)
        request = make(request_schema(ADD_PARTITIONS_TO_TXN, version), transactions=(
            make(mod.AddPartitionsToTxnTransaction, transactional_id=transactional_id,
                 producer_id=producer_id, producer_epoch=producer_epoch, verify_only=not add,
                 topics=(make(mod.AddPartitionsToTxnTopic, name=tp[0],
                              partitions=(tp[1],)),)),))
        response = await self.markers.request(node, request)
        if response.error_code != ErrorCode.none:
            return response.error_code
        for result in response.results_by_transaction:
            for topic in result.topic_results:
                for p in topic.results_by_partition:
                    if (topic.name, p.partition_index) == tp:
                        return p.partition_error_code
        return ErrorCode.unknown_server_error

    # --- EndTxn -----------------------------------------------------------------------
    async def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int,
                      commit: bool, v2: bool = False) -> tuple[int, int]:
        """Commit or abort; answers the producer id and epoch the producer goes on with
        (EndTxn v5's fields; for V1 they are unchanged)."""
        if v2:
            return await self._end_txn_v2(transactional_id, producer_id, producer_epoch,
                                          commit)
        await self._end_txn_v1(transactional_id, producer_id, producer_epoch, commit)
        return producer_id, producer_epoch

    async def _end_txn_v2(self, transactional_id: str, producer_id: int,
                          producer_epoch: int, commit: bool) -> tuple[int, int]:
        """EndTxn v5 (KIP-890 part 2), as Kafka's endTransaction for Transactions V2: the
        transaction ends with epoch + 1 (a new producer id once the epoch is exhausted).
        Since the epoch moves, a retry is told by its epoch being one below the current
        (or the old producer id at MAX_EPOCH - 1 after a rotation): it succeeds when the
        last transaction ended the same way. Once completed, only such a retry is valid:
        the current epoch gets PRODUCER_FENCED there, as in Kafka."""
        p, state = self._owner(transactional_id)
        txn = state.txns.get(transactional_id)
        if txn is None:
            raise kafka_error(ErrorCode.invalid_producer_id_mapping)
        v2_txn = txn.txn_version >= 2
        retry_on_bump = v2_txn and txn.producer_epoch == producer_epoch + 1
        retry_on_overflow = v2_txn and txn.last_producer_id == producer_id and \
            producer_epoch == MAX_EPOCH - 1 and txn.producer_epoch == 0
        s = txn.state
        if not v2_txn:
            valid = producer_epoch == txn.producer_epoch
        elif s in (TxnState.ONGOING, TxnState.EMPTY, TxnState.DEAD):
            valid = producer_epoch == txn.producer_epoch
        elif s in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
            valid = retry_on_bump
        else:
            valid = retry_on_bump or retry_on_overflow
        if txn.producer_id != producer_id and not retry_on_overflow:
            raise kafka_error(ErrorCode.invalid_producer_id_mapping)
        if not valid:
            raise kafka_error(ErrorCode.producer_fenced)
        if txn.pending is not None:
            raise kafka_error(ErrorCode.concurrent_transactions)
        if s == TxnState.ONGOING:
            next_pid = NO_PRODUCER_ID
            if txn.producer_epoch >= MAX_EPOCH - 1:
                next_pid = await self.new_producer_id()
                if self._owner(transactional_id)[1].txns.get(transactional_id) is not txn \
                        or txn.pending is not None or txn.state != TxnState.ONGOING:
                    raise kafka_error(ErrorCode.concurrent_transactions)
            t = txn.prepare_end_v2(commit, self.clock.now_ms(), next_pid)
            await self._write(p, state, txn, t)
            self._spawn_markers(p, state, txn)
            if txn.next_producer_id != NO_PRODUCER_ID:
                return txn.next_producer_id, 0
            return txn.producer_id, txn.producer_epoch
        if (s == TxnState.COMPLETE_COMMIT and commit) or \
                (s == TxnState.COMPLETE_ABORT and not commit):
            return txn.producer_id, txn.producer_epoch  # a retry of an EndTxn that completed
        if (s == TxnState.PREPARE_COMMIT and commit) or \
                (s == TxnState.PREPARE_ABORT and not commit):
            raise kafka_error(ErrorCode.concurrent_transactions)
        raise kafka_error(ErrorCode.invalid_txn_state,
                          f"{'Commit' if commit else 'Abort'} of {transactional_id} in "
                          f"state {s.kafka_name}")

    async def _end_txn_v1(self, transactional_id: str, producer_id: int,
                          producer_epoch: int, commit: bool) -> None:
        p, state = self._owner(transactional_id)
        txn = self._check_producer(state, transactional_id, producer_id, producer_epoch)
        if txn.pending is not None:
            raise kafka_error(ErrorCode.concurrent_transactions)
        s = txn.state
        if s == TxnState.ONGOING:
            await self._end(p, state, txn, commit)
            return
        if (s == TxnState.COMPLETE_COMMIT and commit) or \
                (s == TxnState.COMPLETE_ABORT and not commit):
            return  # a retry of an EndTxn that completed
        if (s == TxnState.PREPARE_COMMIT and commit) or \
                (s == TxnState.PREPARE_ABORT and not commit):
            raise kafka_error(ErrorCode.concurrent_transactions)
        raise kafka_error(ErrorCode.invalid_txn_state,
                          f"{'Commit' if commit else 'Abort'} of {transactional_id} in "
                          f"state {s.kafka_name}")

    async def _end(self, p: int, state: TxnPartition, txn: TransactionMetadata,
                   commit: bool, fence: bool = False) -> None:
        t = txn.prepare_end(commit, self.clock.now_ms(), fence=fence)
        await self._write(p, state, txn, t)
        self._spawn_markers(p, state, txn)

    def _spawn_markers(self, p: int, state: TxnPartition, txn: TransactionMetadata) -> None:
        spawn(self._complete(p, state, txn), f"txn-markers-{txn.transactional_id}",
              state.tasks)

    async def _complete(self, p: int, state: TxnPartition, txn: TransactionMetadata) -> None:
        """Write the markers of a prepared transaction, then CompleteCommit/Abort."""
        commit = txn.state == TxnState.PREPARE_COMMIT
        while True:
            try:
                await self.markers.write(txn.producer_id, txn.producer_epoch,
                                         state.coordinator_epoch, commit, set(txn.partitions))
                break
            except MarkersFenced as e:
                log.warning("Stopped completing %s: %s", txn.transactional_id, e)
                return
            except Exception:  # never leave a prepared transaction behind: try again
                log.exception("Writing the markers of %s failed", txn.transactional_id)
                await asyncio.sleep(1.0)
        while self.partitions.get(p) is state:
            try:
                await self._write(p, state, txn, txn.prepare_complete(self.clock.now_ms()))
                return
            except KafkaError as e:
                if e.code == ErrorCode.not_coordinator:
                    return
                await asyncio.sleep(0.5)

    # --- timers -----------------------------------------------------------------------
    async def _timers(self) -> None:
        now = self.clock.monotonic()
        if now - self._last_abort_check >= self.config.get(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms") / 1000:
            self._last_abort_check = now
            await self.abort_timed_out()
        if now - self._last_expiry_check >= self.config.get(
                "transaction.remove.expired.transaction.cleanup.interval.ms") / 1000:
            self._last_expiry_check = now
            await self.expire_transactional_ids()

    async def abort_timed_out(self) -> None:
        now = self.clock.now_ms()
        for p, state in list(self.partitions.items()):
            if state.loading:
                continue
            for txn in list(state.txns.values()):
                if txn.state != TxnState.ONGOING or txn.pending is not None or \
                        txn.start_ms + txn.timeout_ms > now:
                    continue
                log.info("Aborting transaction %s of producer %d: past its timeout of %d ms",
                         txn.transactional_id, txn.producer_id, txn.timeout_ms)
                try:
                    await self._end(p, state, txn, commit=False, fence=True)
                except KafkaError as e:
                    log.warning("Could not abort %s: %s", txn.transactional_id, e)

    async def expire_transactional_ids(self) -> None:
        now = self.clock.now_ms()
        expiration = self.config.get("transactional.id.expiration.ms")
        for p, state in list(self.partitions.items()):
            if state.loading:
                continue
            for txn in list(state.txns.values()):
                if txn.pending is not None or txn.state not in (
                        TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT) \
                        or txn.last_update_ms + expiration > now:
                    continue
                try:
                    await self._write(p, state, txn, txn.prepare_dead())
                except KafkaError as e:
                    log.warning("Could not expire %s: %s", txn.transactional_id, e)
                    continue
                if state.txns.get(txn.transactional_id) is txn:
                    del state.txns[txn.transactional_id]
                log.info("Expired transactional id %s", txn.transactional_id)

    # --- admin ------------------------------------------------------------------------
    def describe(self, transactional_id: str) -> TransactionMetadata:
        _, state = self._owner(transactional_id)
        txn = state.txns.get(transactional_id)
        if txn is None or txn.state == TxnState.DEAD:
            raise kafka_error(ErrorCode.transactional_id_not_found)
        return txn

    def list_transactions(self, states: set[TxnState] | None = None,
                          producer_ids: set[int] | None = None, min_duration_ms: int = -1,
                          pattern: str | None = None) -> list[TxnListing]:
        regex = re.compile(pattern) if pattern else None
        now = self.clock.now_ms()
        out = []
        for state in self.partitions.values():
            if state.loading:
                raise kafka_error(ErrorCode.coordinator_load_in_progress)
            for txn in state.txns.values():
                if txn.state == TxnState.DEAD or (states and txn.state not in states) or \
                        (producer_ids and txn.producer_id not in producer_ids):
                    continue
                # as Kafka: an id with no transaction (start -1) passes any duration
                if min_duration_ms >= 0 and now - txn.start_ms <= min_duration_ms:
                    continue
                if regex is not None and not regex.search(txn.transactional_id):
                    continue
                out.append(TxnListing(txn.transactional_id, txn.producer_id,
                                      txn.state.kafka_name))
        return sorted(out, key=lambda t: t.transactional_id)


__all__ = ["TRANSACTION_STATE_TOPIC", "TransactionCoordinator", "TxnListing"]
