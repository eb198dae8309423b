"""ConsumerGroupHeartbeat (key 68), versions 0-1: the consumer group protocol (KIP-848).

Behaviour: one request does it all: join (member_epoch 0, with a subscription), heartbeat,
acknowledge revocations (by reporting the partitions still owned), leave (-1; -2 for a
static member). The broker computes assignments with the `uniform` (default) or `range`
assignor and hands them out step by step so no partition has two owners.
Errors: UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH, UNSUPPORTED_ASSIGNOR, INVALID_REQUEST (a
join without subscription or rebalance timeout, an epoch below -2), GROUP_MAX_SIZE_REACHED,
INVALID_REGULAR_EXPRESSION (a SubscribedTopicRegex that RE2 cannot compile),
GROUP_ID_NOT_FOUND (the id belongs to a classic group with members), NOT_COORDINATOR,
COORDINATOR_LOAD_IN_PROGRESS, INVALID_GROUP_ID.
Version notes: v1 clients choose their member id (KIP-1082) and may subscribe by regex
(RE2 syntax, as Kafka; matched against whole topic names).
With an authorizer: GROUP_AUTHORIZATION_FAILED without READ on the group.
"""

from __future__ import annotations

import datetime

from strom.api.authorization import Op, Res, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 68


@register(API_KEY, "consumer_group_heartbeat", 0, 1)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    cls = response_schema(API_KEY, ctx.version)
    owned = None
    if request.topic_partitions is not None:
        owned = {t.topic_id: set(t.partitions) for t in request.topic_partitions}
    rebalance_ms = int(request.rebalance_timeout.total_seconds() * 1000)
    try:
        check(ctx, Op.READ, Res.GROUP, request.group_id)
        r = await ctx.broker.groups.consumer.heartbeat(
            request.group_id, request.member_id, request.member_epoch, request.instance_id,
            request.rack_id, rebalance_ms, request.subscribed_topic_names,
            getattr(request, "subscribed_topic_regex", None), request.server_assignor, owned,
            ctx.header.client_id or "", ctx.client_host)
    except KafkaError as e:
        return make(cls, error_code=e.code, error_message=e.message, member_id=None,
                    member_epoch=-1, heartbeat_interval=datetime.timedelta(0))
    assignment = None
    if r.assignment is not None:
        assignment = make(mod.Assignment, topic_partitions=tuple(
            make(mod.TopicPartitions, topic_id=t, partitions=tuple(sorted(ps)))
            for t, ps in sorted(r.assignment.items(), key=lambda x: str(x[0]))))
    return make(cls, error_code=ErrorCode.none, error_message=None, member_id=r.member_id,
                member_epoch=r.member_epoch,
                heartbeat_interval=datetime.timedelta(milliseconds=r.heartbeat_interval_ms),
                assignment=assignment)
