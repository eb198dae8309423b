"""LeaveGroup (key 13), versions 0-5.

Behaviour: removes the members at once and rebalances the rest (no wait for the session
timeout). v0-2 name one member; v3+ a batch, static members by group_instance_id, each
with its own error (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID).
With an authorizer: GROUP_AUTHORIZATION_FAILED without READ on the group.
"""

from __future__ import annotations

from strom.api.authorization import Op, Res, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 13


@register(API_KEY, "leave_group", 0, 5)
async def handle(ctx: RequestContext, request):
    cls = response_schema(API_KEY, ctx.version)
    if ctx.version >= 3:
        wanted = [(m.member_id, m.group_instance_id) for m in request.members]
    else:
        wanted = [(request.member_id, None)]
    try:
        check(ctx, Op.READ, Res.GROUP, request.group_id)
        results = await ctx.broker.groups.leave_group(request.group_id, wanted)
    except KafkaError as e:
        return make(cls, error_code=e.code, members=())
    if ctx.version < 3:
        return make(cls, error_code=results[0][2])
    mod = response_module(API_KEY, ctx.version)
    return make(cls, error_code=ErrorCode.none, members=tuple(
        make(mod.MemberResponse, member_id=m, group_instance_id=i, error_code=code)
        for m, i, code in results))
