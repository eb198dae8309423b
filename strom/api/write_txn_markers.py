"""WriteTxnMarkers (key 27), versions 1-2 (Kafka 4 removed v0; kio encodes 1-2).

Behaviour: sent by a transaction coordinator to each partition leader when a transaction
commits or aborts. For every marker, each listed partition gets a COMMIT
(transaction_result true) or ABORT control batch carrying the coordinator epoch, appended
as leader and replicated to the ISR before the answer (ReplicaManager.append_txn_marker);
the producer's transaction on that partition ends and the last stable offset moves on. The
partitions of one request are written concurrently.
Errors per partition: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER,
INVALID_PRODUCER_EPOCH (older than the partition's producer epoch),
TRANSACTION_COORDINATOR_FENCED (older coordinator epoch than the last marker's),
NOT_ENOUGH_REPLICAS (ISR below min.insync.replicas), NOT_ENOUGH_REPLICAS_AFTER_APPEND,
REQUEST_TIMED_OUT.
Version notes: v1 and v2 are flexible and identical on the wire (v2 marks KIP-890's
transaction version 2 coordinators).
"""

from __future__ import annotations

import asyncio

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 27


@register(API_KEY, "write_txn_markers", 1, 2)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    replicas = ctx.broker.replicas

    may = allowed(ctx, Op.CLUSTER_ACTION, Res.CLUSTER)  # brokers only, as in Kafka

    async def one(marker, topic: str, index: int) -> int:
        if not may:
            return ErrorCode.cluster_authorization_failed
        if ctx.broker.cache.partition(topic, index) is None:
            return ErrorCode.unknown_topic_or_partition
        return await replicas.append_txn_marker(
            topic, index, marker.producer_id, marker.producer_epoch, marker.coordinator_epoch,
            marker.transaction_result)

    codes = iter(await asyncio.gather(*(
        one(m, t.name, index) for m in request.markers for t in m.topics
        for index in t.partition_indexes)))
    return make(response_schema(API_KEY, ctx.version), markers=tuple(
        make(mod.WritableTxnMarkerResult, producer_id=m.producer_id, topics=tuple(
            make(mod.WritableTxnMarkerTopicResult, name=t.name, partitions=tuple(
                make(mod.WritableTxnMarkerPartitionResult, partition_index=index,
                     error_code=ErrorCode(next(codes)))
                for index in t.partition_indexes))
            for t in m.topics))
        for m in request.markers))
