"""Writing a transaction's COMMIT or ABORT markers to the leaders of its partitions.

As Kafka's TransactionMarkerChannelManager: the partitions are grouped by their current
leader; the leader that is this broker gets `ReplicaManager.append_txn_marker` directly,
every other leader one WriteTxnMarkers request (v1, the oldest Kafka 4.x serves) over an
inter-broker connection. A partition is retried (leader moved, not enough replicas,
connection lost) until its marker is written, or dropped when its topic was deleted.
A stale producer epoch or coordinator epoch (INVALID_PRODUCER_EPOCH,
TRANSACTION_COORDINATOR_FENCED) means a newer coordinator or producer owns the
transaction: `write` raises and the caller stops.

Owned by the event loop; one connection per destination broker, used by one request at a
time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from strom.cluster.metadata_cache import MetadataCache
from strom.config import BrokerConfig
from strom.protocol.client import BrokerConnection, BrokerConnectionError
from strom.protocol.errors import ErrorCode, KafkaError, kafka_error
from strom.protocol.messages import make, request_module, request_schema
from strom.replication.replica_manager import ReplicaManager

log = logging.getLogger(__name__)

WRITE_TXN_MARKERS = 27
WRITE_TXN_MARKERS_VERSION = 1
RETRY_BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)
_FENCED = (ErrorCode.invalid_producer_epoch, ErrorCode.transaction_coordinator_fenced,
           ErrorCode.producer_fenced)


class MarkersFenced(KafkaError):
    """A newer producer epoch or coordinator epoch owns the transaction."""


class TxnMarkerChannel:
    def __init__(self, broker_id: int, config: BrokerConfig, cache: MetadataCache,
                 replicas: ReplicaManager) -> None:
        self.broker_id = broker_id
        self.config = config
        self.cache = cache
        self.replicas = replicas
        self._conns: dict[int, BrokerConnection] = {}
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Kafka's TransactionMarkerChannelManager gauges (read by strom.metrics): markers
        # waiting for a leader, and markers to send again after a failed round
        self.unknown_destination = 0
        self.log_append_retry = 0

    async def close(self) -> None:
        for conn in self._conns.values():
            await conn.close()
        self._conns.clear()

    async def write(self, producer_id: int, producer_epoch: int, coordinator_epoch: int,
                    commit: bool, partitions: set[tuple[str, int]]) -> None:
        """Returns once every partition (of a topic that still exists) has its marker."""
        left = set(partitions)
        attempt = 0
        unknown = retry = 0  # this call's share of the two gauges
        try:
            while left:
                by_leader: dict[int, list[tuple[str, int]]] = defaultdict(list)
                for tp in sorted(left):
                    if self.cache.topic(tp[0]) is None:
                        log.info("Dropping the marker for %s-%d: its topic is gone", *tp)
                        left.discard(tp)
                        continue
                    info = self.cache.partition(*tp)
                    if info is not None and info.leader >= 0:
                        by_leader[info.leader].append(tp)
                waiting = len(left) - sum(len(tps) for tps in by_leader.values())
                self.unknown_destination += waiting - unknown
                unknown = waiting
                results = await asyncio.gather(*(
                    self._send(leader, tps, producer_id, producer_epoch, coordinator_epoch,
                               commit) for leader, tps in by_leader.items()))
                for result in results:
                    for tp, code in result.items():
                        if code == ErrorCode.none:
                            left.discard(tp)
                        elif code in _FENCED:
                            raise MarkersFenced(
                                f"marker for {tp[0]}-{tp[1]} refused: {code.name}", code)
                self.log_append_retry += len(left) - retry
                retry = len(left)
                if left:
                    await asyncio.sleep(
                        RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
                    attempt += 1
        finally:
            self.unknown_destination -= unknown
            self.log_append_retry -= retry

    async def _send(self, leader: int, tps: list[tuple[str, int]], producer_id: int,
                    producer_epoch: int, coordinator_epoch: int, commit: bool
                    ) -> dict[tuple[str, int], ErrorCode]:
        if leader == self.broker_id:
            out = {}
            for topic, partition in tps:
                try:
                    code = await self.replicas.append_txn_marker(
                        topic, partition, producer_id, producer_epoch, coordinator_epoch,
                        commit)
                except KafkaError as e:
                    code = e.code
                out[(topic, partition)] = ErrorCode(code)
            return out
        try:
            return await self._send_remote(leader, tps, producer_id, producer_epoch,
                                           coordinator_epoch, commit)
        except (BrokerConnectionError, KafkaError) as e:
            log.info("WriteTxnMarkers to broker %d failed, will retry: %s", leader, e)
            return {tp: ErrorCode.not_leader_or_follower for tp in tps}

    async def _send_remote(self, leader: int, tps: list[tuple[str, int]], producer_id: int,
                           producer_epoch: int, coordinator_epoch: int, commit: bool
                           ) -> dict[tuple[str, int], ErrorCode]:
        mod = request_module(WRITE_TXN_MARKERS, WRITE_TXN_MARKERS_VERSION)
        topics: dict[str, list[int]] = defaultdict(list)
        for t, p in tps:
            topics[t].append(p)
        request = make(request_schema(WRITE_TXN_MARKERS, WRITE_TXN_MARKERS_VERSION), markers=(
            make(mod.WritableTxnMarker, producer_id=producer_id,
                 producer_epoch=producer_epoch, transaction_result=commit,
                 coordinator_epoch=coordinator_epoch,
                 topics=tuple(make(mod.WritableTxnMarkerTopic, name=t,
                                   partition_indexes=tuple(ps))
                              for t, ps in topics.items())),))
        response = await self.request(leader, request)
        out = {tp: ErrorCode.unknown_server_error for tp in tps}
        for marker in response.markers:
            for topic in marker.topics:
                for p in topic.partitions:
                    out[(topic.name, p.partition_index)] = ErrorCode(p.error_code)
        return out

    async def request(self, broker: int, request):
        """One request to another broker over this channel's connection to it (also used
        for KIP-890 verification). Raises BrokerConnectionError or KafkaError."""
        async with self._locks[broker]:
            conn = await self._connection(broker)
            try:
                return await conn.request(request)
            except BrokerConnectionError:
                self._conns.pop(broker, None)
                raise

    async def _connection(self, broker: int) -> BrokerConnection:
        conn = self._conns.get(broker)
        if conn is not None and not conn.closed:
            return conn
        listener = self.config.get("inter.broker.listener.name") or \
            self.config.listeners()[0][0]
        endpoint = self.cache.endpoint(broker, listener)
        if endpoint is None:
            raise kafka_error(ErrorCode.broker_not_available, f"no endpoint for {broker}")
        conn = BrokerConnection(endpoint.host, endpoint.port,
                                client_id=f"broker-{self.broker_id}-txn",
                                timeout_s=self.config.get("replica.socket.timeout.ms") / 1000)
        await conn.connect()
        self._conns[broker] = conn
        return conn
