"""JoinGroup (key 11), versions 0-9.

Behaviour: see coordinator/group_coordinator.py. A new dynamic member gets
MEMBER_ID_REQUIRED with its id first (v4+); the response waits (the connection parks, as in
Kafka) until the rebalance completes. The leader gets every member's metadata. Static
members (group_instance_id, v5+) keep their place across restarts; a fenced one gets
FENCED_INSTANCE_ID. Errors: INVALID_GROUP_ID, INVALID_SESSION_TIMEOUT,
INCONSISTENT_GROUP_PROTOCOL, UNKNOWN_MEMBER_ID, GROUP_MAX_SIZE_REACHED, NOT_COORDINATOR,
COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE.
Version notes: v0 has no rebalance timeout (the session timeout is used); v7+ carries the
protocol type in the response; v9 skip_assignment for a static leader that rejoined.
With an authorizer: GROUP_AUTHORIZATION_FAILED without READ on the group.
"""

from __future__ import annotations

from strom.api.authorization import Op, Res, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 11


def _ms(td) -> int:
    return int(td.total_seconds() * 1000)


@register(API_KEY, "join_group", 0, 9)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    cls = response_schema(API_KEY, ctx.version)
    session_ms = _ms(request.session_timeout)
    rebalance_ms = _ms(request.rebalance_timeout) if hasattr(request, "rebalance_timeout") \
        else session_ms
    try:
        check(ctx, Op.READ, Res.GROUP, request.group_id)
        result = await ctx.broker.groups.join_group(
            request.group_id, request.member_id, getattr(request, "group_instance_id", None),
            request.protocol_type, [(p.name, p.metadata) for p in request.protocols],
            session_ms, rebalance_ms, ctx.header.client_id or "", ctx.client_host,
            require_known_member_id=ctx.version >= 4)
    except KafkaError as e:
        return make(cls, error_code=e.code, generation_id=-1, protocol_type=None,
                    protocol_name=None if ctx.version >= 7 else "", leader="",
                    member_id=request.member_id, members=())
    members = tuple(make(mod.JoinGroupResponseMember, member_id=m, group_instance_id=i,
                         metadata=data) for m, i, data in result.members)
    return make(cls, error_code=result.error, generation_id=result.generation_id,
                protocol_type=result.protocol_type,
                protocol_name=result.protocol_name if ctx.version >= 7
                else (result.protocol_name or ""),
                leader=result.leader, skip_assignment=result.skip_assignment,
                member_id=result.member_id, members=members)
