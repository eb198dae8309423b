"""DeleteRecords (key 21), versions 0-2.

Behaviour per partition (on its leader): the log start offset moves up to the offset asked
for (-1: the high watermark); records below it are no longer served (Fetch answers
OFFSET_OUT_OF_RANGE, ListOffsets earliest gives the new start) and whole segments below
it are deleted as retention deletes them. An offset at or below the current start changes
nothing. The answer waits (up to timeout_ms) until every replica on a live broker has
moved its own start offset: followers learn the leader's from Fetch responses and report
theirs in their next Fetch. low_watermark is then the smallest start offset over those
replicas. The partitions of one request are handled concurrently.
Errors per partition: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER,
OFFSET_OUT_OF_RANGE (past the high watermark, or negative other than -1),
POLICY_VIOLATION (cleanup.policy without `delete`), INVALID_TOPIC_EXCEPTION (internal
topics, as Kafka), REQUEST_TIMED_OUT (the replicas did not follow in time; the leader's
start offset has moved all the same). low_watermark is -1 with an error.
Version notes: v1 is v0 (throttling order only); v2 is flexible.
With an authorizer: TOPIC_AUTHORIZATION_FAILED without DELETE on the topic.
"""

from __future__ import annotations

import asyncio

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 21
HIGH_WATERMARK = -1


@register(API_KEY, "delete_records", 0, 2)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    timeout_ms = request.timeout.total_seconds() * 1000

    async def one(topic: str, index: int, offset: int):
        code, low = ErrorCode.none, -1
        if not allowed(ctx, Op.DELETE, Res.TOPIC, topic):
            code = ErrorCode.topic_authorization_failed
        elif ctx.broker.cache.partition(topic, index) is None:
            code = ErrorCode.unknown_topic_or_partition
        else:
            try:
                low = await ctx.broker.replicas.delete_records(topic, index, offset,
                                                               timeout_ms)
            except KafkaError as e:
                code = e.code
        return make(mod.DeleteRecordsPartitionResult, partition_index=index,
                    low_watermark=low, error_code=code)

    answers = iter(await asyncio.gather(*(one(t.name, p.partition_index, p.offset)
                                          for t in request.topics for p in t.partitions)))
    return make(response_schema(API_KEY, ctx.version), topics=tuple(
        make(mod.DeleteRecordsTopicResult, name=t.name,
             partitions=tuple(next(answers) for _ in t.partitions))
        for t in request.topics))
