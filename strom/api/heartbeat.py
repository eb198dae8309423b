"""Heartbeat (key 12), versions 0-4.

Behaviour: keeps a member alive for its session timeout; REBALANCE_IN_PROGRESS tells it to
rejoin. Errors: UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, FENCED_INSTANCE_ID, NOT_COORDINATOR,
COORDINATOR_LOAD_IN_PROGRESS.
With an authorizer: GROUP_AUTHORIZATION_FAILED without READ on the group.
"""

from __future__ import annotations

from strom.api.authorization import Op, Res, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import KafkaError
from strom.protocol.messages import make, response_schema

API_KEY = 12


@register(API_KEY, "heartbeat", 0, 4)
async def handle(ctx: RequestContext, request):
    try:
        check(ctx, Op.READ, Res.GROUP, request.group_id)
        code = ctx.broker.groups.heartbeat(request.group_id, request.generation_id,
                                           request.member_id,
                                           getattr(request, "group_instance_id", None))
    except KafkaError as e:
        code = e.code
    return make(response_schema(API_KEY, ctx.version), error_code=code)
