"""Follower fetchers: one task per leader broker copies that leader's partitions here.

Kafka's pull model. For each partition it follows, a fetcher first checks for a divergent
tail after every leader change (KIP-101/279): it asks the leader with OffsetForLeaderEpoch
where its own latest leader epoch ends there, and truncates its log to that offset (or to
its high watermark when the leader cannot say). Then it fetches from its log end offset
with its replica id; the leader counts that offset as the follower's log end offset, which
is what moves the leader's high watermark and keeps the follower in the ISR.

A response is applied only if the partition is still followed at the same leader epoch as
when the request went out, so a leader change in between never mixes two leaders' data.
Owned by the event loop.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from strom.cluster.metadata_cache import MetadataCache
from strom.config import BrokerConfig
from strom.protocol import fetch_response
from strom.protocol.batch import HEADER_SIZE, InvalidBatch, crc_is_valid, read_header
from strom.protocol.client import BrokerConnection, BrokerConnectionError, ClientSecurity
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, request_module, request_schema
from strom.replication.partition import Partition
from strom.tasks import essential, spawn

log = logging.getLogger(__name__)

FETCH_VERSION = 12
OFFSET_FOR_LEADER_EPOCH_VERSION = 3

TopicPartition = tuple[str, int]


def _per_topic(cls, parts: dict[TopicPartition, object]) -> tuple:
    """A request's topic entries (`cls`, with topic= and partitions=) holding its partition
    entries `parts`, in the order the topics first appear."""
    topics: dict[str, list] = {}
    for (topic, _), part in parts.items():
        topics.setdefault(topic, []).append(part)
    return tuple(make(cls, topic=name, partitions=tuple(p)) for name, p in topics.items())


@dataclass(slots=True)
class FetchTarget:
    partition: Partition
    leader_epoch: int
    needs_truncation: bool = True
    delayed_until: float = 0.0
    errors: int = field(default=0)  # failed fetches in a row

    def failed(self) -> bool:
        """Count one more failure in a row; True when it is one to log (the first and every
        20th, so a partition that keeps failing does not flood the log)."""
        self.errors += 1
        return self.errors == 1 or self.errors % 20 == 0


class ReplicaFetcher:
    """Copies the partitions led by one broker."""

    def __init__(self, broker_id: int, leader_id: int, config: BrokerConfig,
                 cache: MetadataCache, on_appended: Callable[[TopicPartition], None],
                 security: ClientSecurity | None = None) -> None:
        self.broker_id = broker_id
        self.security = security
        self.leader_id = leader_id
        self.config = config
        self.cache = cache
        self.on_appended = on_appended
        self.targets: dict[TopicPartition, FetchTarget] = {}
        self._changed = asyncio.Event()
        self._conn: BrokerConnection | None = None
        # the loop retries every failure itself: if it ends anyway, the broker fails loudly
        self._task = essential(spawn(self._run(), f"replica-fetcher-{leader_id}"))
        self._backoff = config.get("replica.fetch.backoff.ms") / 1000

    def add(self, partition: Partition) -> None:
        tp = (partition.topic, partition.index)
        self.targets[tp] = FetchTarget(partition, partition.leader_epoch)
        self._changed.set()

    def remove(self, tp: TopicPartition) -> None:
        if self.targets.pop(tp, None) is not None:
            self._changed.set()

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass
        if self._conn is not None:
            await self._conn.close()

    # --- the loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            ready = {tp: t for tp, t in self.targets.items() if t.delayed_until <= now}
            if not ready:
                self._changed.clear()
                delays = [t.delayed_until - now for t in self.targets.values()]
                try:
                    await asyncio.wait_for(self._changed.wait(),
                                           min(delays) if delays else None)
                except TimeoutError:
                    pass
                continue
            try:
                conn = await self._connection()
                to_truncate = {tp: t for tp, t in ready.items() if t.needs_truncation}
                if to_truncate:
                    await self._truncate(conn, to_truncate)
                    continue
                await self._fetch(conn, ready)
            except asyncio.CancelledError:
                raise
            except (ConnectionError, OSError, TimeoutError) as e:
                log.info("Fetcher for leader %d: %s; retrying in %.1f s", self.leader_id,
                         e, self._backoff)
                await self._drop_connection()
                await asyncio.sleep(self._backoff)
            except Exception:
                log.exception("Fetcher for leader %d failed; retrying", self.leader_id)
                await self._drop_connection()
                await asyncio.sleep(self._backoff)

    async def _connection(self) -> BrokerConnection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        listener = self.config.inter_broker_listener()
        endpoint = self.cache.endpoint(self.leader_id, listener)
        if endpoint is None:
            raise ConnectionError(f"broker {self.leader_id} is not registered")
        conn = BrokerConnection(endpoint.host, endpoint.port,
                                client_id=f"strom-replica-fetcher-{self.broker_id}",
                                timeout_s=self.config.get("replica.socket.timeout.ms") / 1000,
                                security=self.security)
        await conn.connect()
        self._conn = conn
        return conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    def _delay(self, target: FetchTarget) -> None:
        target.delayed_until = asyncio.get_running_loop().time() + self._backoff

    def _current(self, tp: TopicPartition, target: FetchTarget) -> bool:
        """The target is still followed from this leader at the epoch of the request."""
        p = target.partition
        return self.targets.get(tp) is target and p.leader == self.leader_id and \
            p.leader_epoch == target.leader_epoch

    # --- truncation (OffsetForLeaderEpoch) ----------------------------------------------------
    async def _truncate(self, conn: BrokerConnection, targets: dict[TopicPartition, FetchTarget]
                        ) -> None:
        mod = request_module(23, OFFSET_FOR_LEADER_EPOCH_VERSION)
        asked: dict[TopicPartition, int] = {}
        parts: dict[TopicPartition, object] = {}
        for tp, t in targets.items():
            plog = t.partition.log
            if plog.latest_epoch < 0:
                # no epochs known here: anything past the high watermark may be divergent
                plog.truncate_to(plog.high_watermark)
                t.needs_truncation = False
                continue
            asked[tp] = plog.latest_epoch
            parts[tp] = make(mod.OffsetForLeaderPartition, partition=tp[1],
                             current_leader_epoch=t.leader_epoch,
                             leader_epoch=plog.latest_epoch)
        if not parts:
            return
        request = make(request_schema(23, OFFSET_FOR_LEADER_EPOCH_VERSION),
                       replica_id=self.broker_id,
                       topics=_per_topic(mod.OffsetForLeaderTopic, parts))
        response = await conn.request(request)
        for topic in response.topics:
            for r in topic.partitions:
                tp = (topic.topic, r.partition)
                t = targets.get(tp)
                if t is None or not self._current(tp, t):
                    continue
                if r.error_code != ErrorCode.none:
                    log.info("%s: OffsetForLeaderEpoch from %d: %s", t.partition,
                             self.leader_id, ErrorCode(r.error_code).name)
                    self._delay(t)
                    continue
                try:
                    self._truncate_to_leader(t, asked[tp], r.leader_epoch, r.end_offset)
                except (InvalidBatch, OSError) as e:
                    # as a failed append (_fetch): this partition backs off and tries again;
                    # the leader's other partitions go on
                    if t.failed():
                        log.error("%s: cannot truncate to what leader %d answered (%d times): "
                                  "%s", t.partition, self.leader_id, t.errors, e)
                    self._delay(t)

    @staticmethod
    def _truncate_to_leader(t: FetchTarget, asked_epoch: int, leader_epoch: int,
                            end_offset: int) -> None:
        plog = t.partition.log
        if leader_epoch < 0 or end_offset < 0:
            target = plog.high_watermark
        else:
            target = min(end_offset, plog.log_end_offset)
            if leader_epoch < asked_epoch:
                # the leader never had our latest epoch: our log diverges from where
                # our copy of its (older) epoch ends
                own_epoch, own_end = plog.end_offset_for_epoch(leader_epoch)
                if own_epoch == leader_epoch:
                    target = min(target, own_end)
        if target < plog.log_end_offset:
            log.warning("%s: truncating from %d to %d (leader %d ends epoch %d at %d)",
                        t.partition, plog.log_end_offset, target, t.partition.leader,
                        leader_epoch, end_offset)
            plog.truncate_to(target)
        t.needs_truncation = False

    # --- fetching -----------------------------------------------------------------------------
    async def _fetch(self, conn: BrokerConnection, targets: dict[TopicPartition, FetchTarget]
                     ) -> None:
        mod = request_module(1, FETCH_VERSION)
        parts: dict[TopicPartition, object] = {}
        offsets: dict[TopicPartition, int] = {}
        for tp, t in targets.items():
            plog = t.partition.log
            offsets[tp] = plog.log_end_offset
            parts[tp] = make(
                mod.FetchPartition, partition=tp[1], current_leader_epoch=t.leader_epoch,
                fetch_offset=plog.log_end_offset, last_fetched_epoch=-1,
                log_start_offset=plog.log_start_offset,
                partition_max_bytes=self.config.get("replica.fetch.max.bytes"))
        request = make(
            request_schema(1, FETCH_VERSION), cluster_id=None, replica_id=self.broker_id,
            max_wait=datetime.timedelta(milliseconds=self.config.get("replica.fetch.wait.max.ms")),
            min_bytes=self.config.get("replica.fetch.min.bytes"),
            max_bytes=self.config.get("replica.fetch.response.max.bytes"),
            isolation_level=0, session_id=0, session_epoch=-1,
            topics=_per_topic(mod.FetchTopic, parts),
            forgotten_topics_data=(), rack_id="")
        frame = await conn.request_frame(request)
        try:
            response = fetch_response.decode(frame, FETCH_VERSION)
        except ValueError as e:
            raise BrokerConnectionError(f"malformed Fetch response from broker "
                                        f"{self.leader_id}: {e}") from None
        if response.error_code != ErrorCode.none:
            raise ConnectionError(f"fetch failed: {ErrorCode(response.error_code).name}")
        for r in response.partitions:
            tp = (r.topic, r.partition_index)
            t = targets.get(tp)
            if t is None or not self._current(tp, t) or \
                    t.partition.log.log_end_offset != offsets[tp]:
                continue
            try:
                self._apply(tp, t, r)
            except (InvalidBatch, OSError) as e:
                # as Kafka's fetcher: this partition backs off and is fetched again (a
                # corrupt answer may be transient); the leader's other partitions go on
                if t.failed():
                    log.error("%s: cannot append what leader %d sent at offset %d "
                              "(%d times): %s", t.partition, self.leader_id, offsets[tp],
                              t.errors, e)
                self._delay(t)

    def _apply(self, tp: TopicPartition, t: FetchTarget, r: fetch_response.FetchedPartition
               ) -> None:
        p = t.partition
        plog = p.log
        code = r.error_code
        if code == ErrorCode.none:
            data = r.records
            if data:
                self._append(p, data)
            p.update_follower_high_watermark(r.high_watermark)
            if r.log_start_offset > plog.log_start_offset:
                p.update_follower_log_start_offset(r.log_start_offset)
            t.errors = 0
            if data:
                self.on_appended(tp)
        elif code == ErrorCode.offset_out_of_range:
            if r.log_start_offset >= 0 and plog.log_end_offset < r.log_start_offset:
                log.warning("%s: fetch offset %d is below the leader's log start %d; "
                            "starting over there", p, plog.log_end_offset, r.log_start_offset)
                plog.truncate_fully_and_start_at(r.log_start_offset)
            elif 0 <= r.high_watermark < plog.log_end_offset:
                log.warning("%s: fetch offset %d is past the leader's log; truncating to "
                            "its high watermark %d", p, plog.log_end_offset, r.high_watermark)
                plog.truncate_to(max(r.high_watermark, plog.log_start_offset))
            else:
                t.needs_truncation = True
                self._delay(t)
        else:
            # NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION:
            # the leader has not applied the same partition state yet (or it moved on and
            # our metadata will follow); try again after the backoff
            if t.failed():
                log.info("%s: fetch from %d: %s", p, self.leader_id, ErrorCode(code).name)
            self._delay(t)

    @staticmethod
    def _append(p: Partition, data: memoryview) -> None:
        """Check every whole batch in `data` (header and CRC) and append them all."""
        headers = []
        pos = 0
        end = len(data)
        while end - pos >= HEADER_SIZE:
            h = read_header(data, pos)
            if pos + h.size > end:
                break  # a partial batch at the end of a size-limited response
            if not crc_is_valid(data, pos, h):
                raise InvalidBatch(f"corrupt batch at offset {h.base_offset} (CRC mismatch)")
            headers.append(h)
            pos += h.size
        if headers:
            p.log.append_as_follower(data[:pos], headers)


class ReplicaFetcherManager:
    """The fetchers of this broker, one per leader broker it follows."""

    def __init__(self, broker_id: int, config: BrokerConfig, cache: MetadataCache,
                 on_appended: Callable[[TopicPartition], None],
                 security: ClientSecurity | None = None) -> None:
        self.broker_id = broker_id
        self.security = security
        self.config = config
        self.cache = cache
        self.on_appended = on_appended
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self._following: dict[TopicPartition, int] = {}
        self._closing: set[asyncio.Task] = set()  # fetchers left with nothing to copy

    def follow(self, partition: Partition) -> None:
        """Start (or restart, after a leader change) copying `partition` from its leader."""
        tp = (partition.topic, partition.index)
        if self._following.get(tp) != partition.leader:
            self.stop_following(tp)
        if partition.leader < 0 or partition.leader == self.broker_id:
            return
        fetcher = self.fetchers.get(partition.leader)
        if fetcher is None:
            fetcher = ReplicaFetcher(self.broker_id, partition.leader, self.config,
                                     self.cache, self.on_appended, self.security)
            self.fetchers[partition.leader] = fetcher
        fetcher.add(partition)
        self._following[tp] = partition.leader

    def stop_following(self, tp: TopicPartition) -> None:
        leader = self._following.pop(tp, None)
        fetcher = self.fetchers.get(leader) if leader is not None else None
        if fetcher is None:
            return
        fetcher.remove(tp)
        if not fetcher.targets:  # nothing left to copy from that broker: end its task
            del self.fetchers[leader]
            spawn(fetcher.close(), f"close-replica-fetcher-{leader}", self._closing)

    def is_following(self, tp: TopicPartition) -> bool:
        return tp in self._following

    async def close(self) -> None:
        for fetcher in self.fetchers.values():
            await fetcher.close()
        self.fetchers.clear()
        self._following.clear()
