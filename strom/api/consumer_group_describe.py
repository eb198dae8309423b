"""ConsumerGroupDescribe (key 69), versions 0-1.

Behaviour: describes consumer-protocol groups: state (Empty, Assigning, Reconciling,
Stable), group and assignment epochs, assignor, and each member's subscription, current
and target assignment. A classic group or an unknown id gets GROUP_ID_NOT_FOUND.
With an authorizer: GROUP_AUTHORIZATION_FAILED without DESCRIBE on the group.
"""

from __future__ import annotations

from strom.api.authorization import NOT_ASKED, Op, Res, check, operations
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.coordinator.consumer_group import ConsumerGroup
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 69


def _assignment(ctx: RequestContext, mod, assignment):
    parts = []
    for topic_id, ps in sorted(assignment.items(), key=lambda x: str(x[0])):
        info = ctx.broker.cache.topic_by_id(topic_id)
        parts.append(make(mod.TopicPartitions, topic_id=topic_id,
                          topic_name=info.name if info else "", partitions=tuple(sorted(ps))))
    return make(mod.Assignment, topic_partitions=tuple(parts))


@register(API_KEY, "consumer_group_describe", 0, 1)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    out = []
    for group_id in request.group_ids:
        ops = operations(ctx, Res.GROUP, group_id) if request.include_authorized_operations \
            else NOT_ASKED
        try:
            check(ctx, Op.DESCRIBE, Res.GROUP, group_id)
            ctx.broker.groups.check_coordinator(group_id)
            group = ctx.broker.groups.registry.get(group_id)
            if not isinstance(group, ConsumerGroup):
                raise KafkaError(f"Group {group_id} not found.", ErrorCode.group_id_not_found)
        except KafkaError as e:
            out.append(make(mod.DescribedGroup, error_code=e.code, error_message=e.message,
                            group_id=group_id, group_state="", group_epoch=-1,
                            assignment_epoch=-1, assignor_name="", members=(),
                            authorized_operations=ops))
            continue
        members = tuple(make(
            mod.Member, member_id=m.member_id, instance_id=m.instance_id, rack_id=m.rack_id,
            member_epoch=m.member_epoch, client_id=m.client_id, client_host=m.client_host,
            subscribed_topic_names=m.subscribed_topic_names,
            subscribed_topic_regex=m.subscribed_topic_regex,
            assignment=_assignment(ctx, mod, m.assigned),
            target_assignment=_assignment(ctx, mod, group.target.get(m.member_id, {})),
            member_type=1) for m in group.members.values())
        out.append(make(mod.DescribedGroup, error_code=ErrorCode.none, error_message=None,
                        group_id=group_id, group_state=group.state,
                        group_epoch=group.group_epoch,
                        assignment_epoch=group.assignment_epoch,
                        assignor_name=group.assignor_name, members=members,
                        authorized_operations=ops))
    return make(response_schema(API_KEY, ctx.version), groups=tuple(out))
