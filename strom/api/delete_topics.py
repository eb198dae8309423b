"""DeleteTopics (key 20), versions 1-6.

Behaviour: removes each topic through the controller; every broker then deletes the
topic's partition directories. Unknown topics get UNKNOWN_TOPIC_OR_PARTITION (or
UNKNOWN_TOPIC_ID when named by id, v6); internal topics cannot be deleted
(INVALID_TOPIC_EXCEPTION); `delete.topic.enable=false` gives TOPIC_DELETION_DISABLED.
Version notes: v6 may name topics by id.
With an authorizer: TOPIC_AUTHORIZATION_FAILED without DELETE on the topic.
Quota: the partitions of each deleted topic count against controller_mutation_rate (v5+:
THROTTLING_QUOTA_EXCEEDED for a topic while it is exceeded; older: throttled only).
"""

from __future__ import annotations

from strom.api.answers import refresh_after_write, request_error
from strom.api.authorization import Op, Res, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.api.throttling import ControllerMutationQuota
from strom.cluster.store import StoreError
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 20


@register(API_KEY, "delete_topics", 1, 6)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    cache = ctx.broker.cache
    if ctx.version >= 6:
        wanted = [(t.name, t.topic_id) for t in request.topics]
    else:
        wanted = [(name, None) for name in request.topic_names]
    quota = ControllerMutationQuota(ctx, strict_since=5)
    results = []
    for name, topic_id in wanted:
        error, message = ErrorCode.none, None
        try:
            if name is None:
                info = cache.topic_by_id(topic_id)
                if info is None:
                    raise KafkaError(f"Topic id {topic_id} not found",
                                     ErrorCode.unknown_topic_id)
                name = info.name
            check(ctx, Op.DELETE, Res.TOPIC, name)
            if not ctx.broker.config.get("delete.topic.enable"):
                raise KafkaError("Topic deletion is disabled.",
                                 ErrorCode.topic_deletion_disabled)
            info = cache.topic(name)
            if info is not None:
                quota.record(len(info.partitions))
            topic_id = await ctx.broker.controller.delete_topic(name)
        except (KafkaError, StoreError) as exc:
            e = request_error(exc)
            error, message = e.code, e.message
        results.append(make(mod.DeletableTopicResult, name=name, topic_id=topic_id,
                            error_code=error, error_message=message))
    await refresh_after_write(ctx, {r.name for r in results if r.name})
    return make(response_schema(API_KEY, ctx.version), responses=tuple(results))
