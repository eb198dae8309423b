"""CreatePartitions (key 37), versions 0-3.

Behaviour: increases a topic's partition count (never decreases: INVALID_PARTITIONS),
with Kafka's placement or the explicit assignments given; honours validate_only.
Duplicate topics in one request are INVALID_REQUEST.
With an authorizer: TOPIC_AUTHORIZATION_FAILED without ALTER on the topic.
Quota: the partitions added count against controller_mutation_rate (v3:
THROTTLING_QUOTA_EXCEEDED for a topic while it is exceeded; older: throttled only).
"""

from __future__ import annotations

from collections import Counter

from strom.api.answers import refresh_after_write, request_error
from strom.api.authorization import Op, Res, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.api.throttling import ControllerMutationQuota
from strom.cluster.store import StoreError
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 37


@register(API_KEY, "create_partitions", 0, 3)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    counts = Counter(t.name for t in request.topics)
    quota = ControllerMutationQuota(ctx, strict_since=3)
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
            controller = ctx.broker.controller
            if quota.enabled and not request.validate_only:
                await controller.create_partitions(t.name, t.count, assignment, True)
                info = ctx.broker.cache.topic(t.name)
                quota.record(t.count - (len(info.partitions) if info else 0))
            await controller.create_partitions(t.name, t.count, assignment,
                                               request.validate_only)
        except (KafkaError, StoreError) as exc:
            e = request_error(exc)
            error, message = e.code, e.message
        results.append(make(mod.CreatePartitionsTopicResult, name=t.name, error_code=error,
                            error_message=message))
    await refresh_after_write(ctx, {t.name for t in request.topics})
    return make(response_schema(API_KEY, ctx.version), results=tuple(results))
