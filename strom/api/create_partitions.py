"""CreatePartitions (key 37), versions 0-3.

Behaviour: increases a topic's partition count (never decreases: INVALID_PARTITIONS),
with Kafka's placement or the explicit assignments given; honours validate_only.
Duplicate topics in one request are INVALID_REQUEST.
With an authorizer: TOPIC_AUTHORIZATION_FAILED without ALTER on the topic.
"""

from __future__ import annotations

from collections import Counter

from strom.api.authorization import Op, Res, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 37


@register(API_KEY, "create_partitions", 0, 3)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    counts = Counter(t.name for t in request.topics)
    results = []
    for t in request.topics:
        error, message = ErrorCode.none, None
        try:
            if counts[t.name] > 1:
                raise KafkaError(f"Duplicate topic {t.name} in the request",
                                 ErrorCode.invalid_request)
            check(ctx, Op.ALTER, Res.TOPIC, t.name)
            assignment = [list(a.broker_ids) for a in t.assignments] \
                if t.assignments is not None else None
            await ctx.broker.controller.create_partitions(t.name, t.count, assignment,
                                                          request.validate_only)
        except KafkaError as e:
            error, message = e.code, e.message
        results.append(make(mod.CreatePartitionsTopicResult, name=t.name, error_code=error,
                            error_message=message))
    await ctx.broker.cache.refresh_now({t.name for t in request.topics})
    return make(response_schema(API_KEY, ctx.version), results=tuple(results))
