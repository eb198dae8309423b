"""SyncGroup (key 14), versions 0-5.

Behaviour: the leader sends every member's assignment; each member gets its own once the
leader's arrives (or at once in a Stable group). Errors: UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, INCONSISTENT_GROUP_PROTOCOL (v5 protocol
type/name mismatch), FENCED_INSTANCE_ID, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS.
With an authorizer: GROUP_AUTHORIZATION_FAILED without READ on the group.
"""

from __future__ import annotations

from strom.api.authorization import Op, Res, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import KafkaError
from strom.protocol.messages import make, response_schema

API_KEY = 14


@register(API_KEY, "sync_group", 0, 5)
async def handle(ctx: RequestContext, request):
    cls = response_schema(API_KEY, ctx.version)
    try:
        check(ctx, Op.READ, Res.GROUP, request.group_id)
        result = await ctx.broker.groups.sync_group(
            request.group_id, request.generation_id, request.member_id,
            getattr(request, "group_instance_id", None),
            getattr(request, "protocol_type", None), getattr(request, "protocol_name", None),
            {a.member_id: a.assignment for a in request.assignments})
    except KafkaError as e:
        return make(cls, error_code=e.code, assignment=b"")
    return make(cls, error_code=result.error, assignment=result.assignment,
                protocol_type=result.protocol_type, protocol_name=result.protocol_name)
