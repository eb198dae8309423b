"""ReplicaManager: the partitions this broker hosts, produce appends and fetch reads.

It follows the MetadataCache: when a topic's assignment or partition state names this
broker, the partition's log is opened (or created) and the replica becomes leader or
follower (a follower is handed to the fetchers, see fetcher.py); when the topic
disappears, or the broker is no longer one of its replicas, its log is deleted.

Two purgatories of futures, both keyed by partition:
- fetch: a parked fetch wakes on an append (followers) or a high watermark move
  (consumers), so a waiting client is answered as soon as data arrives;
- produce: an acks=all produce waits until the high watermark passes its batch, which
  happens when every ISR member has fetched past it, or fails when leadership moves.

As leader it keeps the ISR: followers that have not caught up for replica.lag.time.max.ms
are dropped, caught-up ones added back; each change is a compare-and-set write of the
partition state znode (leader, leader_epoch, isr, controller_epoch), so a write based on a
stale state (the controller moved leadership meanwhile) is refused. Owned by the event loop.

Transactions, the partition side: Produce takes transactional batches (a batch from a
producer with no transaction open on the partition is first checked by `txn_verifier`, set
by the transaction coordinator: KIP-890's verification); `append_txn_marker` writes a
COMMIT/ABORT marker as leader (WriteTxnMarkers) and tells the `add_txn_marker_listener`
callbacks (the group coordinator's pending transactional offsets); read_committed fetches
stop at the last stable offset and list the aborted transactions of the range.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from strom.clock import Clock
from strom.cluster import model
from strom.cluster.metadata_cache import MetadataCache
from strom.cluster.store import MetadataStore, StoreError
from strom.cluster.topic_names import INTERNAL_TOPICS
from strom.config import BrokerConfig, TopicConfig
from strom.log.manager import LogManager
from strom.log.partition_log import AppendResult, ReadResult
from strom.log.transaction_index import AbortedTxn
from strom.log.validator import needs_records, validate_header, validate_records
from strom.metrics.stats import BrokerTopicStats
from strom.protocol.client import ClientSecurity
from strom.protocol.errors import (
    ErrorCode,
    InvalidTopic,
    KafkaError,
    KafkaStorageError,
    NotLeaderOrFollower,
    RequestTimedOut,
    TransactionalIdAuthorizationFailed,
    UnknownTopicOrPartition,
    error,
)
from strom.replication.fetch_deadlines import FetchDeadlines
from strom.replication.fetcher import ReplicaFetcherManager
from strom.replication.partition import Partition
from strom.tasks import essential, run_forever, spawn

NotEnoughReplicasAfterAppend = error(ErrorCode.not_enough_replicas_after_append)

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
# a purgatory of offset waiters: partition -> [(offset to reach, future)]
_Waiters = dict[TopicPartition, list[tuple[int, asyncio.Future]]]

# an uncompressed batch up to this size has its records checked on the loop (a few hundred
# microseconds at most); a compressed or larger one in the executor
INLINE_RECORDS_BYTES = 64 * 1024
READ_COMMITTED = 1  # Fetch / ListOffsets isolation_level
# how long a marker waits for the ISR (Kafka's markers wait request.timeout.ms)
MARKER_TIMEOUT_MS = 30_000

# (transactional_id, producer_id, producer_epoch, topic, partition) -> error code
TxnVerifier = Callable[[str, int, int, str, int, bool], Awaitable[int]]
TxnMarkerListener = Callable[[str, int, int, bool], None]


@dataclass(slots=True)
class FetchPartitionRequest:
    topic: str
    partition: int
    fetch_offset: int
    max_bytes: int
    current_leader_epoch: int = -1
    log_start_offset: int = -1  # a follower's own (Fetch v5+)


@dataclass(slots=True)
class FetchPartitionResult:
    topic: str
    partition: int
    error: KafkaError | None
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    read: ReadResult | None = None
    # read_committed: (producer id, first offset) of the aborted transactions in the range
    aborted: tuple[tuple[int, int], ...] | None = None

    @property
    def size(self) -> int:
        return self.read.slice.size if self.read and self.read.slice else 0


class ReplicaManager:
    def __init__(self, broker_id: int, config: BrokerConfig, clock: Clock,
                 logs: LogManager, cache: MetadataCache, store: MetadataStore | None = None,
                 client_security: ClientSecurity | None = None) -> None:
        self.broker_id = broker_id
        self.client_security = client_security  # how followers connect to leaders
        self.config = config
        self.clock = clock
        self.logs = logs
        self.cache = cache
        self.store = store
        self.partitions: dict[TopicPartition, Partition] = {}
        # parked fetches: consumers wait for the high watermark, followers for appends
        self._waiters: dict[TopicPartition, set[asyncio.Future]] = defaultdict(set)
        self._replica_waiters: dict[TopicPartition, set[asyncio.Future]] = defaultdict(set)
        # while a metadata change or a follower's positions are applied: the partitions
        # whose consumers' parked fetches are woken once it is whole (`_with_wakes_held`)
        self._held: dict[TopicPartition, None] | None = None
        # acks=all produces: partition -> [(offset the high watermark must reach, future)]
        self._produce_waiters: _Waiters = {}
        # DeleteRecords: partition -> [(offset the low watermark must reach, future)]
        self._delete_waiters: _Waiters = {}
        self.fetchers: ReplicaFetcherManager | None = None
        self._isr_task: asyncio.Task | None = None
        self._isr_writes: set[asyncio.Task] = set()
        # set by the transaction coordinator (see the module docstring); None: no check
        self.txn_verifier: TxnVerifier | None = None
        # transaction.partition.verification.enable: verify (KIP-890 part 1); adding a
        # partition for Produce v12 (Transactions V2) happens either way
        self.txn_verification = True
        self._txn_marker_listeners: list[TxnMarkerListener] = []
        # Kafka's BrokerTopicMetrics and ReplicaManager meters, read by strom.metrics
        self.stats = BrokerTopicStats()
        self.isr_shrinks = 0
        self.isr_expands = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # for `park`, once it runs
        self._fetch_deadlines: FetchDeadlines | None = None  # the max waits `park` times
        cache.on_change(self.on_topics_changed)

    def start(self) -> None:
        """Start the fetchers and the ISR check (needs a running loop)."""
        self.fetchers = ReplicaFetcherManager(self.broker_id, self.config, self.cache,
                                              self._on_follower_append, self.client_security)
        lag = self.config.get("replica.lag.time.max.ms")
        self._isr_task = essential(spawn(
            run_forever(self._expire_isr, "ISR expiration", max(lag / 2000, 0.05)),
            "isr-expiration"))
        for p in self.partitions.values():
            if not p.is_leader and p.leader >= 0:
                self.fetchers.follow(p)

    async def stop_fetchers(self) -> None:
        """Stop following (controlled shutdown: this broker leaves every ISR)."""
        if self.fetchers is not None:
            await self.fetchers.close()

    async def stop(self) -> None:
        if self._isr_task is not None:
            self._isr_task.cancel()
        if self.fetchers is not None:
            await self.fetchers.close()
        for tp in list(self._produce_waiters):
            _fail(self._produce_waiters, tp, NotLeaderOrFollower("The broker is shutting down"))
        for tp in list(self._delete_waiters):
            _fail(self._delete_waiters, tp, NotLeaderOrFollower("The broker is shutting down"))

    # --- following metadata ---------------------------------------------------------------
    def topic_config(self, topic: str) -> TopicConfig:
        info = self.cache.topic(topic)
        return TopicConfig.of(self.config, info.configs if info else None)

    def on_topics_changed(self, topics: set[str]) -> None:
        """Follow the metadata of `topics`. Consumers' fetches parked on a partition that
        changes are answered once the whole change is applied, so a fetch of several
        partitions sees all of them changed (a topic deleted: each one's error)."""
        self._with_wakes_held(self._apply_topics, topics)

    def _with_wakes_held(self, apply: Callable[..., None], *args) -> None:
        """`apply(*args)` (synchronous) with consumers' wakes held until it returns, so a
        fetch parked on several of the partitions it changes sees all of them changed."""
        if self._held is not None:  # within such a change already
            apply(*args)
            return
        held = self._held = {}
        try:
            apply(*args)
        finally:
            self._held = None
            self.wake_consumers(held)

    def _apply_topics(self, topics: set[str]) -> None:
        now = self.clock.now_ms()
        for name in topics:
            info = self.cache.topic(name)
            if info is None:
                self._remove_topic(name)
                continue
            config = self.topic_config(name)
            for p, pinfo in info.partitions.items():
                tp = (name, p)
                if self.broker_id not in pinfo.replicas:
                    if tp in self.partitions:
                        self._stop_replica(tp)
                    continue
                partition = self.partitions.get(tp)
                if partition is None:
                    plog = self.logs.get_or_create(name, p, config, info.topic_id)
                    partition = Partition(name, p, info.topic_id, plog, self.broker_id)
                    partition.stats = self.stats.topic(name)
                    self.partitions[tp] = partition
                partition.log.config = config
                st = pinfo.state
                if st.leader == self.broker_id:
                    if partition.is_leader and st.leader_epoch == partition.leader_epoch \
                            and st.version >= partition.state_version \
                            and len(st.isr) < len(partition.isr):
                        self.isr_shrinks += 1  # the controller took a dead broker out
                    if partition.make_leader(st, pinfo.replicas, now) and self.fetchers:
                        self.fetchers.stop_following(tp)
                    self._complete_produce_waiters(tp, partition)
                else:
                    was_leader = partition.is_leader
                    changed = partition.make_follower(st, pinfo.replicas)
                    if was_leader:
                        _fail(self._produce_waiters, tp, NotLeaderOrFollower(
                            f"Leadership of {name}-{p} moved to {st.leader}"))
                        _fail(self._delete_waiters, tp, NotLeaderOrFollower(
                            f"Leadership of {name}-{p} moved to {st.leader}"))
                    if self.fetchers is not None and partition.log.offline:
                        self.fetchers.stop_following(tp)  # its log dir failed (KIP-112)
                    elif self.fetchers is not None and (
                            changed or not self.fetchers.is_following(tp)):
                        self.fetchers.follow(partition)
                self._wake(tp)

    def stop_fetching(self, tps: list[TopicPartition]) -> None:
        """KIP-112: these partitions' log dir failed; as Kafka's handleLogDirFailure, stop
        following them (an append there can only fail) until the broker restarts."""
        if self.fetchers is not None:
            for tp in tps:
                self.fetchers.stop_following(tp)

    def _stop_replica(self, tp: TopicPartition) -> None:
        self.partitions.pop(tp)
        if self.fetchers is not None:
            self.fetchers.stop_following(tp)
        _fail(self._produce_waiters, tp, NotLeaderOrFollower(
            f"Broker {self.broker_id} no longer hosts {tp[0]}-{tp[1]}"))
        _fail(self._delete_waiters, tp, UnknownTopicOrPartition(
            f"Broker {self.broker_id} no longer hosts {tp[0]}-{tp[1]}"))
        self.logs.delete(*tp)
        self._wake(tp)

    def _remove_topic(self, name: str) -> None:
        for tp in [tp for tp in self.partitions if tp[0] == name]:
            self._stop_replica(tp)
        for tp in [tp for tp in self.logs.logs if tp[0] == name]:
            self.logs.delete(*tp)
        self.stats.remove(name)

    def get_partition(self, topic: str, partition: int) -> Partition:
        p = self.partitions.get((topic, partition))
        if p is None:
            if self.cache.partition(topic, partition) is not None:
                raise NotLeaderOrFollower(
                    f"Broker {self.broker_id} does not host {topic}-{partition}")
            raise UnknownTopicOrPartition(
                f"This server does not host this topic-partition: {topic}-{partition}")
        if p.log.offline:  # its log dir failed (KIP-112): as Kafka's HostedPartition.Offline
            raise KafkaStorageError(f"The log dir of {topic}-{partition} is offline")
        return p

    def leader_partition(self, topic: str, partition: int, epoch: int = -1) -> Partition:
        p = self.get_partition(topic, partition)
        p.check_leader(epoch)
        return p

    # --- produce --------------------------------------------------------------------------
    def append(self, topic: str, partition: int, data: bytes, acks: int, *,
               internal_topics_allowed: bool = False) -> AppendResult:
        """Validate and append one partition's batch as leader, on the loop (the
        coordinators' small batches). Internal topics take appends only when
        `internal_topics_allowed` (the coordinators themselves), as in Kafka."""
        self._check_internal(topic, internal_topics_allowed)
        p = self.leader_partition(topic, partition)
        batch = bytearray(data)
        header = validate_header(batch, p.log.config, self.clock.now_ms())
        batch, header = validate_records(batch, header, p.log.config)
        result = p.append_as_leader(batch, header, acks)
        self._wake((topic, partition))
        return result

    async def append_produced(self, topic: str, partition: int, data: bytes, acks: int, *,
                              internal_topics_allowed: bool = False,
                              transactional_id: str | None = None,
                              add_to_txn: bool = False,
                              woken: dict[TopicPartition, None] | None = None) -> AppendResult:
        """A client's batch: as `append`, but when the topic needs its records read (keys on
        a compacted topic, another compression.type) and the batch is compressed or larger
        than INLINE_RECORDS_BYTES, that work runs in the default executor, off the loop.
        A transactional batch needs the request's `transactional_id` (else, as Kafka's
        authorizer answers a null id, TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and, when its
        producer has no transaction open here, the `txn_verifier`'s approval (with
        `add_to_txn`, Produce v12: the verifier adds the partition to the transaction).
        Counted in the topic's stats (the unattributed ones for a partition not hosted).
        Given `woken`, the partition is added to it and its consumers' parked fetches are
        left for the caller to answer (`wake_consumers`) once its other appends are done;
        followers' fetches are woken at once."""
        if not self.stats.enabled:
            return await self._append_produced(topic, partition, data, acks,
                                               internal_topics_allowed, transactional_id,
                                               add_to_txn, woken)
        p = self.partitions.get((topic, partition))
        stats = p.stats if p is not None else self.stats.unattributed
        stats.produce_requests += 1
        try:
            result = await self._append_produced(topic, partition, data, acks,
                                                 internal_topics_allowed, transactional_id,
                                                 add_to_txn, woken)
        except KafkaError:
            stats.failed_produce_requests += 1
            raise
        stats.messages_in += result.last_offset - result.base_offset + 1
        stats.bytes_in += len(data)
        return result

    async def _append_produced(self, topic: str, partition: int, data: bytes, acks: int,
                               internal_topics_allowed: bool,
                               transactional_id: str | None,
                               add_to_txn: bool = False,
                               woken: dict[TopicPartition, None] | None = None
                               ) -> AppendResult:
        self._check_internal(topic, internal_topics_allowed)
        p = self.leader_partition(topic, partition)
        batch = bytearray(data)
        config = p.log.config
        header = validate_header(batch, config, self.clock.now_ms())
        if header.is_transactional:
            if transactional_id is None:
                raise TransactionalIdAuthorizationFailed(
                    "A transactional batch needs the request's transactional id")
            verifier = self.txn_verifier
            if verifier is not None and (add_to_txn or self.txn_verification) and \
                    not p.log.producer_state.has_ongoing_txn(
                        header.producer_id, header.producer_epoch if add_to_txn else None):
                code = await verifier(transactional_id, header.producer_id,
                                      header.producer_epoch, topic, partition, add_to_txn)
                if code:
                    raise error(ErrorCode(code))(
                        f"Transaction verification of producer {header.producer_id} for "
                        f"{topic}-{partition} failed")
                p = self.leader_partition(topic, partition)  # it may have moved meanwhile
        if needs_records(header, config):
            if header.compression_id == 0 and header.size <= INLINE_RECORDS_BYTES:
                batch, header = validate_records(batch, header, config)
            else:
                batch, header = await asyncio.get_running_loop().run_in_executor(
                    None, validate_records, batch, header, config)
                p = self.leader_partition(topic, partition)  # it may have moved meanwhile
        result = p.append_as_leader(batch, header, acks)
        if woken is None:
            self._wake((topic, partition))
        else:
            woken[(topic, partition)] = None
            self._wake_waiters(self._replica_waiters, (topic, partition))
        return result

    def append_plain(self, topic: str, partition: int, data: bytes | memoryview, acks: int
                     ) -> tuple[AppendResult, Partition] | None:
        """`append_produced` for the plain case, on the loop: a client's batch (acks 0 or
        1, or -1 when this broker is the partition's whole ISR: the append moves the high
        watermark over the batch, so `wait_for_replication` would have nothing to wait for)
        for a partition led here, not transactional, that needs no record-level work.
        None, with nothing done (nor counted), for anything else: the caller then takes the
        full path. A KafkaError is raised as `append_produced` raises it, before anything
        is written or counted (the full path, taken then, counts the failed request)."""
        if acks not in (0, 1, -1) or topic in INTERNAL_TOPICS:
            return None
        p = self.leader_partition(topic, partition)
        if acks == -1 and p.isr != (self.broker_id,):
            return None
        batch = bytearray(data)
        config = p.log.config
        header = validate_header(batch, config, self.clock.now_ms())
        if header.is_transactional or needs_records(header, config):
            return None
        result = p.append_as_leader(batch, header, acks)
        self._wake((topic, partition))
        if self.stats.enabled:
            stats = p.stats
            stats.produce_requests += 1
            stats.messages_in += result.last_offset - result.base_offset + 1
            stats.bytes_in += len(data)
        return result, p

    # --- transaction markers -------------------------------------------------------------
    def add_txn_marker_listener(self, callback: TxnMarkerListener) -> None:
        """`callback(topic, partition, producer_id, commit)` runs on the loop after each
        marker this broker appends as leader is replicated to the ISR."""
        self._txn_marker_listeners.append(callback)

    async def append_txn_marker(self, topic: str, partition: int, producer_id: int,
                                producer_epoch: int, coordinator_epoch: int,
                                commit: bool) -> int:
        """Append a COMMIT/ABORT marker as leader and wait for the ISR (as an acks=all
        Produce); returns a Kafka error code (0 on success). Internal topics take markers
        too (TxnOffsetCommit writes to __consumer_offsets)."""
        try:
            p = self.leader_partition(topic, partition)
            result = p.append_marker(producer_id, producer_epoch, coordinator_epoch, commit)
            self._wake((topic, partition))
            await self.wait_for_replication(topic, partition, result.last_offset + 1,
                                            MARKER_TIMEOUT_MS)
        except KafkaError as e:
            return int(e.code)
        for callback in list(self._txn_marker_listeners):
            try:
                callback(topic, partition, producer_id, commit)
            except Exception:
                log.exception("Transaction marker listener failed for %s-%d", topic,
                              partition)
        return ErrorCode.none

    @staticmethod
    def _check_internal(topic: str, allowed: bool) -> None:
        if topic in INTERNAL_TOPICS and not allowed:
            raise InvalidTopic(f"Cannot append to internal topic {topic}")

    def replicated(self, topic: str, partition: int, end_offset: int) -> bool:
        """Whether `wait_for_replication` for `end_offset` would return (or fail) at once."""
        p = self.partitions.get((topic, partition))
        return p is None or not p.is_leader or p.high_watermark >= end_offset

    async def wait_for_replication(self, topic: str, partition: int, end_offset: int,
                                   timeout_ms: float) -> None:
        """acks=all: return once the high watermark reaches `end_offset` (every ISR member
        has the batch). NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR then is smaller than
        min.insync.replicas, NOT_LEADER_OR_FOLLOWER if leadership moved, REQUEST_TIMED_OUT
        after `timeout_ms`."""
        tp = (topic, partition)
        p = self.leader_partition(topic, partition)
        if p.high_watermark < end_offset:
            await _park(self._produce_waiters, tp, end_offset, timeout_ms, lambda: (
                f"Timed out waiting for the ISR {list(p.isr)} of {topic}-{partition} "
                f"to replicate up to offset {end_offset}"))
            p = self.leader_partition(topic, partition)
        min_isr = p.log.config.get("min.insync.replicas")
        if len(p.isr) < min_isr:
            raise NotEnoughReplicasAfterAppend(
                f"The size of the current ISR {list(p.isr)} is insufficient to satisfy the "
                f"min.isr requirement of {min_isr} for partition {topic}-{partition}")

    def _complete_produce_waiters(self, tp: TopicPartition, p: Partition) -> None:
        waiters = self._produce_waiters.get(tp)
        if not waiters:
            return
        hw = p.high_watermark
        for end_offset, fut in waiters:
            if end_offset <= hw and not fut.done():
                fut.set_result(None)

    def _high_watermark_moved(self, tp: TopicPartition, p: Partition) -> None:
        self._complete_produce_waiters(tp, p)
        # consumers may read further; a parked follower has no more data to fetch than
        # before (as in Kafka, a high watermark move does not complete its fetch)
        self._wake_consumers(tp)

    # --- DeleteRecords -------------------------------------------------------------------
    async def delete_records(self, topic: str, partition: int, offset: int,
                             timeout_ms: float) -> int:
        """Move the partition's log start offset to `offset` (-1: the high watermark) as
        leader and wait until every replica on a live broker has moved its own (followers
        learn it from Fetch responses and report theirs in their next Fetch); returns the
        low watermark then. REQUEST_TIMED_OUT after `timeout_ms`, NOT_LEADER_OR_FOLLOWER
        if leadership moves meanwhile. Internal topics: INVALID_TOPIC_EXCEPTION, as Kafka."""
        if topic in INTERNAL_TOPICS:
            raise InvalidTopic(f"Cannot delete records of internal topic {topic}")
        tp = (topic, partition)
        p = self.leader_partition(topic, partition)
        target = p.delete_records(offset)
        self._wake(tp)  # parked fetches below the new start answer OFFSET_OUT_OF_RANGE
        low = p.low_watermark(self.cache.brokers)
        if low >= target:
            return low
        return await _park(self._delete_waiters, tp, target, timeout_ms, lambda: (
            f"Timed out waiting for the replicas of {topic}-{partition} to move their "
            f"log start offset to {target}"))

    def _complete_delete_waiters(self, tp: TopicPartition, p: Partition) -> None:
        low = p.low_watermark(self.cache.brokers)
        for target, fut in self._delete_waiters.get(tp, ()):
            if target <= low and not fut.done():
                fut.set_result(low)

    # --- replication: leader side ---------------------------------------------------------
    def _update_followers(self, requests: list[FetchPartitionRequest], replica_id: int
                          ) -> None:
        """A follower's fetch positions: high watermarks move, the ISR may grow. Consumers
        parked on several of its partitions are answered once all have moved."""
        self._with_wakes_held(self._follower_positions, requests, replica_id)

    def _follower_positions(self, requests: list[FetchPartitionRequest], replica_id: int
                            ) -> None:
        now = self.clock.now_ms()
        for req in requests:
            tp = (req.topic, req.partition)
            p = self.partitions.get(tp)
            if p is None or not p.is_leader:
                continue
            if req.current_leader_epoch >= 0 and req.current_leader_epoch != p.leader_epoch:
                continue
            if p.update_follower(replica_id, req.fetch_offset, now, req.log_start_offset):
                self._high_watermark_moved(tp, p)
            if tp in self._delete_waiters:
                self._complete_delete_waiters(tp, p)
            isr = p.isr_to_expand(self.cache.brokers)
            if isr is not None:
                log.info("%s: expanding ISR from %s to %s", p, list(p.isr), list(isr))
                self._propose_isr(p, isr)

    def _propose_isr(self, p: Partition, isr: tuple[int, ...]) -> None:
        if self.store is None:
            return
        p.pending_isr = isr
        spawn(self._write_isr(p, isr), f"isr-write-{p.topic}-{p.index}", self._isr_writes)

    async def _write_isr(self, p: Partition, isr: tuple[int, ...]) -> None:
        assert self.store is not None
        tp = (p.topic, p.index)
        epoch, version = p.leader_epoch, p.state_version
        state = model.PartitionState(self.broker_id, epoch, isr, p.controller_epoch)
        try:
            new_version = await self.store.set(model.partition_state_path(p.topic, p.index),
                                               state.to_json(), version)
        except StoreError as e:
            # the controller changed the state meanwhile; the watch brings the new one
            log.info("%s: ISR change to %s not written (%s)", p, list(isr), type(e).__name__)
            if p.pending_isr == isr:
                p.pending_isr = None
            return
        if self.partitions.get(tp) is p and p.is_leader and p.leader_epoch == epoch and                 p.state_version == version:
            if len(isr) < len(p.isr):
                self.isr_shrinks += 1
            elif len(isr) > len(p.isr):
                self.isr_expands += 1
            if p.isr_written(isr, new_version):
                self._high_watermark_moved(tp, p)
            else:
                self._complete_produce_waiters(tp, p)

    def _expire_isr(self) -> None:
        """One pass of the ISR check (every replica.lag.time.max.ms / 2): a partition that
        fails is logged and the others are still checked; the task runs it under
        `run_forever`, so nothing ends it but shutdown."""
        lag = self.config.get("replica.lag.time.max.ms")
        now = self.clock.now_ms()
        for p in list(self.partitions.values()):
            try:
                isr = p.isr_to_shrink(now, lag)
                if isr is not None:
                    log.info("%s: shrinking ISR from %s to %s (out of sync for %d ms)", p,
                             list(p.isr), list(isr), lag)
                    self._propose_isr(p, isr)
            except Exception:
                log.exception("%s: ISR check failed", p)

    # --- replication: follower side -------------------------------------------------------
    def _on_follower_append(self, tp: TopicPartition) -> None:
        self._wake(tp)

    # --- fetch ----------------------------------------------------------------------------
    def read_partition(self, req: FetchPartitionRequest, max_bytes: int, min_one: bool,
                       replica_id: int = -1, isolation_level: int = 0
                       ) -> FetchPartitionResult:
        """Read for a follower (to the log end offset), a read_uncommitted consumer (to the
        high watermark) or a read_committed one (to the last stable offset, with the
        aborted transactions that overlap what it may read)."""
        try:
            p = self.leader_partition(req.topic, req.partition, req.current_leader_epoch)
            if replica_id >= 0:
                p.check_follower(replica_id, req.current_leader_epoch)
            plog = p.log
            lso = plog.last_stable_offset
            aborted: tuple[tuple[int, int], ...] | None = None
            if replica_id >= 0:
                max_offset = plog.log_end_offset
            elif isolation_level == READ_COMMITTED:
                max_offset = lso
            else:
                max_offset = p.high_watermark
            read = plog.read(req.fetch_offset, min(max_bytes, req.max_bytes), max_offset,
                             min_one)
            if isolation_level == READ_COMMITTED and replica_id < 0:
                aborted = _aborted_pairs(plog.collect_aborted_txns(req.fetch_offset, max_offset)) \
                    if read.slice is not None else ()
            return FetchPartitionResult(req.topic, req.partition, None, p.high_watermark,
                                        lso, plog.log_start_offset, read, aborted)
        except KafkaError as e:
            p2 = self.partitions.get((req.topic, req.partition))
            hw = p2.high_watermark if p2 else -1
            start = p2.log.log_start_offset if p2 else -1
            lso = p2.log.last_stable_offset if p2 else -1
            return FetchPartitionResult(req.topic, req.partition, e, hw, lso, start)

    def read_all(self, requests: list[FetchPartitionRequest], max_bytes: int,
                 replica_id: int = -1, isolation_level: int = 0
                 ) -> list[FetchPartitionResult]:
        results = []
        remaining = max_bytes
        for req in requests:
            r = self.read_partition(req, max(remaining, 0), min_one=not any(
                x.size for x in results), replica_id=replica_id,
                isolation_level=isolation_level)
            remaining -= r.size
            results.append(r)
        return results

    async def fetch(self, requests: list[FetchPartitionRequest], max_bytes: int,
                    min_bytes: int, max_wait_ms: int, replica_id: int = -1,
                    isolation_level: int = 0) -> list[FetchPartitionResult]:
        """Read now; if less than min_bytes is available and nothing failed, park until
        data arrives for one of the partitions or max_wait_ms passes."""
        if replica_id >= 0:
            self._update_followers(requests, replica_id)
        results = await self._fetch(requests, max_bytes, min_bytes, max_wait_ms, replica_id,
                                    isolation_level)
        if self.stats.enabled:
            self.count_fetch(results, replica_id)
        return results

    def count_fetch(self, results: list[FetchPartitionResult], replica_id: int) -> None:
        """Kafka's fetch meters for an answered fetch (stats on)."""
        partitions = self.partitions
        unattributed = self.stats.unattributed
        for r in results:  # Kafka's fetch meters, per partition read; bytes out: consumers
            p = partitions.get((r.topic, r.partition))
            stats = p.stats if p is not None else unattributed
            stats.fetch_requests += 1
            if r.error is not None:
                stats.failed_fetch_requests += 1
            elif replica_id < 0 and r.read is not None and r.read.slice:
                stats.bytes_out += r.read.slice.size

    async def _fetch(self, requests: list[FetchPartitionRequest], max_bytes: int,
                     min_bytes: int, max_wait_ms: int, replica_id: int,
                     isolation_level: int) -> list[FetchPartitionResult]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait_ms / 1000
        # a consumer tailing the log asks at the end, where there is nothing to read: it
        # parks at once (an error or a moved partition is found by the read after the wait)
        tailing = replica_id < 0 and min_bytes > 0 and max_wait_ms > 0 and \
            self.all_at_end(requests, isolation_level)
        results = None
        while True:
            if not tailing:
                results = self.read_all(requests, max_bytes, replica_id, isolation_level)
                total = sum(r.size for r in results)
                if total >= min_bytes or max_wait_ms <= 0 or any(r.error for r in results) \
                        or not requests:
                    return results
            tailing = False
            timeout = deadline - loop.time()
            if timeout <= 0:
                if results is None:
                    results = self.read_all(requests, max_bytes, replica_id, isolation_level)
                return results
            fut = loop.create_future()
            keys = [(r.topic, r.partition) for r in requests]
            waiters = self._replica_waiters if replica_id >= 0 else self._waiters
            for k in keys:
                waiters[k].add(fut)
            # its max wait resolves the same future (lighter than asyncio.timeout, which a
            # parked fetch would pay for on every request)
            self.fetch_deadlines().add(fut, timeout)
            try:
                expired = await fut
            finally:
                _unpark(waiters, keys, fut)
            if expired:
                return self.read_all(requests, max_bytes, replica_id, isolation_level)

    def park(self, tps: tuple[TopicPartition, ...], timeout_s: float,
             woken: Callable[[bool], None]) -> ParkedCall:
        """A consumer's fetch of `tps` parked without a task, as `_fetch` parks one:
        `woken(expired)` is called once data arrives or the partition changes (False), on
        the spot, by the code that wakes the partition's fetches (an append, a high
        watermark move: the consumer's answer needs no further turn of the loop; a Produce
        of several partitions or a metadata change once it is whole), or once `timeout_s`
        has passed (True). `cancel()` unparks it without a call."""
        call = ParkedCall(woken, tps, self._waiters)
        for tp in tps:
            self._waiters[tp].add(call)
        self.fetch_deadlines().add(call, timeout_s)
        return call

    def fetch_deadlines(self) -> FetchDeadlines:
        """The max waits of parked fetches, under one loop timer."""
        deadlines = self._fetch_deadlines
        if deadlines is None:
            deadlines = self._fetch_deadlines = FetchDeadlines(self.loop())
        return deadlines

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, asked for once (Python 3.11 makes a system call each time)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def all_at_end(self, requests: list[FetchPartitionRequest], isolation_level: int
                    ) -> bool:
        """Every partition of a consumer's fetch is led here, at the epoch it names, and
        the fetch offset is where its reads stop (the high watermark, or the last stable
        offset for read_committed): a read would return nothing and no error."""
        if not requests:
            return False
        partitions = self.partitions
        for req in requests:
            p = partitions.get((req.topic, req.partition))
            if p is None or p.leader != self.broker_id or p.log.offline or \
                    req.current_leader_epoch not in (-1, p.leader_epoch):
                return False
            plog = p.log
            end = plog.last_stable_offset if isolation_level == READ_COMMITTED else \
                plog.high_watermark
            if req.fetch_offset != end:
                return False
        return True

    def _wake(self, tp: TopicPartition) -> None:
        """Answer every fetch parked on `tp` (data arrived, or the partition changed)."""
        self._wake_consumers(tp)
        self._wake_waiters(self._replica_waiters, tp)

    def _wake_consumers(self, tp: TopicPartition) -> None:
        held = self._held
        if held is not None:
            held[tp] = None
        else:
            self._wake_waiters(self._waiters, tp)

    def wake_consumers(self, tps: Iterable[TopicPartition]) -> None:
        """Answer the consumers' fetches parked on any of `tps` (see `append_produced`'s
        `woken`)."""
        for tp in tps:
            self._wake_consumers(tp)

    @staticmethod
    def _wake_waiters(waiters: dict[TopicPartition, set[asyncio.Future]], tp: TopicPartition
                      ) -> None:
        for fut in waiters.pop(tp, ()):
            if not fut.done():
                fut.set_result(None)


async def _park(waiters: _Waiters, tp: TopicPartition, offset: int, timeout_ms: float,
                timeout_message: Callable[[], str]):
    """Wait in `waiters` until a completion passes `offset` (returns the future's result) or
    fails it; RequestTimedOut with `timeout_message()` after `timeout_ms`."""
    fut = asyncio.get_running_loop().create_future()
    entry = (offset, fut)
    waiters.setdefault(tp, []).append(entry)
    try:
        # awaited directly (not through wait_for): the completion wakes this task at once,
        # not a callback that then wakes it
        async with asyncio.timeout(max(timeout_ms, 0) / 1000):
            return await fut
    except TimeoutError:
        raise RequestTimedOut(timeout_message()) from None
    finally:
        parked = waiters.get(tp)
        if parked is not None and entry in parked:
            parked.remove(entry)
            if not parked:
                del waiters[tp]


def _fail(waiters: _Waiters, tp: TopicPartition, exc: KafkaError) -> None:
    for _, fut in waiters.pop(tp, ()):
        if not fut.done():
            fut.set_exception(exc)


def _aborted_pairs(txns: list[AbortedTxn]) -> tuple[tuple[int, int], ...]:
    return tuple((t.producer_id, t.first_offset) for t in txns)


def _unpark(waiters: dict[TopicPartition, set[asyncio.Future]],
            keys: Iterable[TopicPartition], fut: asyncio.Future) -> None:
    """Take a parked fetch's future out of `waiters` (a woken one is out already)."""
    for k in keys:
        s = waiters.get(k)
        if s is not None:
            s.discard(fut)
            if not s:
                del waiters[k]


class ParkedCall:
    """A fetch `ReplicaManager.park` parked: it sits in the consumers' waiters beside the
    futures of fetches parked by a task and is woken the same way (`set_result`), but by
    calling its `woken` there and then rather than a loop turn later. Called once at most;
    an error in `woken` is logged, never raised into the code that woke it."""

    __slots__ = ("woken", "tps", "waiters")

    def __init__(self, woken: Callable[[bool], None], tps: tuple[TopicPartition, ...],
                 waiters: dict[TopicPartition, set]) -> None:
        self.woken: Callable[[bool], None] | None = woken
        self.tps = tps
        self.waiters = waiters

    def done(self) -> bool:
        return self.woken is None

    def set_result(self, expired: bool | None) -> None:
        """Woken: by data or a change of the partition (None), or by its max wait (True,
        `FetchDeadlines`)."""
        woken = self.woken
        if woken is None:
            return
        self.cancel()
        try:
            woken(expired is True)
        except Exception:
            log.exception("Answering a parked fetch of %s failed",
                          ", ".join(f"{t}-{p}" for t, p in self.tps))

    def cancel(self) -> None:
        """Unpark without a call (the connection closed). Its max wait stays in
        `FetchDeadlines` until due, then is dropped."""
        self.woken = None
        _unpark(self.waiters, self.tps, self)


