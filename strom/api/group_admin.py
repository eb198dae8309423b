"""ListGroups (16, v0-5), DescribeGroups (15, v0-5), DeleteGroups (42, v0-2),
OffsetDelete (47, v0).

Behaviour: ListGroups lists the groups this broker coordinates (states_filter v4+,
types_filter v5+: every group is "classic"); COORDINATOR_LOAD_IN_PROGRESS while a partition
loads. DescribeGroups gives state, protocol and members (assignments only when Stable); an
unknown group is described as Dead with no error, as Kafka does; authorized_operations is
INT32_MIN unless asked for. DeleteGroups needs an Empty group (NON_EMPTY_GROUP,
GROUP_ID_NOT_FOUND). OffsetDelete refuses topics the live group still subscribes to
(GROUP_SUBSCRIBED_TO_TOPIC).
With an authorizer (as Kafka): ListGroups lists only groups the principal may DESCRIBE
unless it may DESCRIBE the cluster; DescribeGroups needs DESCRIBE on each group, DeleteGroups
DELETE, OffsetDelete DELETE on the group and READ on each topic (GROUP_ / TOPIC_AUTHORIZATION_
FAILED); authorized_operations when asked.
"""

from __future__ import annotations

from strom.api.authorization import NOT_ASKED, Op, Res, allowed, operations
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema


@register(16, "list_groups", 0, 5)
async def list_groups(ctx: RequestContext, request):
    mod = response_module(16, ctx.version)
    cls = response_schema(16, ctx.version)
    try:
        groups = ctx.broker.groups.list_groups(getattr(request, "states_filter", ()),
                                               getattr(request, "types_filter", ()))
        if not allowed(ctx, Op.DESCRIBE, Res.CLUSTER):
            groups = [g for g in groups if allowed(ctx, Op.DESCRIBE, Res.GROUP, g.group_id)]
    except KafkaError as e:
        return make(cls, error_code=e.code, groups=())
    return make(cls, error_code=ErrorCode.none, groups=tuple(
        make(mod.ListedGroup, group_id=g.group_id, protocol_type=g.protocol_type,
             group_state=g.state, group_type=g.group_type) for g in groups))


@register(15, "describe_groups", 0, 5)
async def describe_groups(ctx: RequestContext, request):
    mod = response_module(15, ctx.version)
    asked = getattr(request, "include_authorized_operations", False)
    out = []
    for group_id in request.groups:
        if not allowed(ctx, Op.DESCRIBE, Res.GROUP, group_id):
            out.append(make(mod.DescribedGroup, group_id=group_id, group_state="",
                            error_code=ErrorCode.group_authorization_failed, protocol_type="",
                            protocol_data="", members=(), authorized_operations=NOT_ASKED))
            continue
        ops = operations(ctx, Res.GROUP, group_id) if asked else NOT_ASKED
        d = ctx.broker.groups.describe_group(group_id)
        out.append(make(
            mod.DescribedGroup, error_code=d.error, group_id=group_id, group_state=d.state,
            protocol_type=d.protocol_type, protocol_data=d.protocol,
            members=tuple(make(mod.DescribedGroupMember, member_id=m.member_id,
                               group_instance_id=m.group_instance_id, client_id=m.client_id,
                               client_host=m.client_host, member_metadata=m.metadata,
                               member_assignment=m.assignment) for m in d.members),
            authorized_operations=ops))
    return make(response_schema(15, ctx.version), groups=tuple(out))


@register(42, "delete_groups", 0, 2)
async def delete_groups(ctx: RequestContext, request):
    mod = response_module(42, ctx.version)
    results = []
    for group_id in request.groups_names:
        code = await ctx.broker.groups.delete_group(group_id) \
            if allowed(ctx, Op.DELETE, Res.GROUP, group_id) \
            else ErrorCode.group_authorization_failed
        results.append(make(mod.DeletableGroupResult, group_id=group_id, error_code=code))
    return make(response_schema(42, ctx.version), results=tuple(results))


@register(47, "offset_delete", 0, 0)
async def offset_delete(ctx: RequestContext, request):
    mod = response_module(47, ctx.version)
    cls = response_schema(47, ctx.version)
    wanted = [(t.name, p.partition_index) for t in request.topics for p in t.partitions]
    if not allowed(ctx, Op.DELETE, Res.GROUP, request.group_id):
        return make(cls, error_code=ErrorCode.group_authorization_failed, topics=())
    denied = [(t, p, ErrorCode.topic_authorization_failed) for t, p in wanted
              if not allowed(ctx, Op.READ, Res.TOPIC, t)]
    wanted = [(t, p) for t, p in wanted if allowed(ctx, Op.READ, Res.TOPIC, t)]
    try:
        results = await ctx.broker.groups.delete_offsets(request.group_id, wanted) + denied
    except KafkaError as e:
        return make(cls, error_code=e.code, topics=())
    by_topic: dict[str, list] = {}
    for t, p, code in results:
        by_topic.setdefault(t, []).append(
            make(mod.OffsetDeleteResponsePartition, partition_index=p, error_code=code))
    return make(cls, error_code=ErrorCode.none, topics=tuple(
        make(mod.OffsetDeleteResponseTopic, name=t, partitions=tuple(ps))
        for t, ps in by_topic.items()))
