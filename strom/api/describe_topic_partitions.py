"""DescribeTopicPartitions (key 75), version 0.

Behaviour: like Metadata for the named topics (all topics when the list is empty), sorted
by name, paginated by response_partition_limit with a cursor (topic, partition) to resume.
Unknown topics get UNKNOWN_TOPIC_OR_PARTITION. No eligible leader replicas (no KIP-966).
With an authorizer: topics without DESCRIBE are left out of "all", and a named one gets
TOPIC_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.metadata import partition_entities
from strom.api.registry import register
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 75


@register(API_KEY, "describe_topic_partitions", 0, 0)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    cache = ctx.broker.cache
    names = sorted({t.name for t in request.topics}) if request.topics else \
        [n for n in sorted(cache.topics) if allowed(ctx, Op.DESCRIBE, Res.TOPIC, n)]
    cursor = request.cursor
    if cursor is not None:
        names = [n for n in names if n >= cursor.topic_name]
    limit = max(1, request.response_partition_limit)
    topics, next_cursor = [], None
    for name in names:
        info = cache.topic(name)
        if not allowed(ctx, Op.DESCRIBE, Res.TOPIC, name):
            topics.append(make(mod.DescribeTopicPartitionsResponseTopic,
                               error_code=ErrorCode.topic_authorization_failed, name=name,
                               topic_id=None, partitions=()))
            continue
        if info is None:
            topics.append(make(mod.DescribeTopicPartitionsResponseTopic,
                               error_code=ErrorCode.unknown_topic_or_partition, name=name,
                               topic_id=None, partitions=()))
            continue
        parts = partition_entities(ctx, info, mod.DescribeTopicPartitionsResponsePartition)
        if cursor is not None and name == cursor.topic_name:
            parts = tuple(p for p in parts if p.partition_index >= cursor.partition_index)
        if len(parts) > limit:
            next_cursor = make(mod.Cursor, topic_name=name,
                               partition_index=parts[limit].partition_index)
            parts = parts[:limit]
        limit -= len(parts)
        topics.append(make(mod.DescribeTopicPartitionsResponseTopic, error_code=ErrorCode.none,
                           name=name, topic_id=info.topic_id, is_internal=info.is_internal,
                           partitions=parts))
        if next_cursor is not None:
            break
        if limit <= 0 and name != names[-1]:
            next_cursor = make(mod.Cursor, topic_name=names[names.index(name) + 1],
                               partition_index=0)
            break
    return make(response_schema(API_KEY, ctx.version), topics=tuple(topics),
                next_cursor=next_cursor)
