"""AlterPartitionReassignments (key 45, versions 0-1) and ListPartitionReassignments
(key 46, version 0).

Behaviour: both are sent to the controller (others answer NOT_CONTROLLER). Alter starts a
reassignment for each partition with a replica list, or cancels the ongoing one for a
null list; per partition: INVALID_REPLICA_ASSIGNMENT (empty, duplicate, unknown or
offline broker), UNKNOWN_TOPIC_OR_PARTITION, NO_REASSIGNMENT_IN_PROGRESS (cancel of
nothing). The move completes in the background (see cluster/reassignment.py). List
returns the ongoing reassignments (of the partitions asked for, or all for null topics)
with their replicas, adding and removing replicas.
Version notes: Alter v1's allow_replication_factor_change=false refuses a target of a
different size with INVALID_REPLICATION_FACTOR.
With an authorizer: CLUSTER_AUTHORIZATION_FAILED without ALTER (alter) or DESCRIBE (list)
on the cluster.
"""

from __future__ import annotations

from strom.api.answers import refresh_after_write, request_error
from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.cluster import reassignment
from strom.cluster.store import StoreError
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

ALTER = 45
LIST = 46


@register(ALTER, "alter_partition_reassignments", 0, 1)
async def alter(ctx: RequestContext, request):
    mod = response_module(ALTER, ctx.version)
    cls = response_schema(ALTER, ctx.version)
    controller = ctx.broker.controller
    if not allowed(ctx, Op.ALTER, Res.CLUSTER):
        return make(cls, error_code=ErrorCode.cluster_authorization_failed,
                    error_message="Cluster authorization failed.", responses=())
    changes: dict[tuple[str, int], list[int] | None] = {}
    early: dict[tuple[str, int], KafkaError] = {}
    keep_rf = not getattr(request, "allow_replication_factor_change", True)
    for t in request.topics:
        for p in t.partitions:
            tp = (t.name, p.partition_index)
            target = list(p.replicas) if p.replicas is not None else None
            changes[tp] = target
    try:
        results: dict = await reassignment.alter(controller, changes, keep_rf) \
            if changes else {}
    except (KafkaError, StoreError) as exc:
        e = request_error(exc)
        return make(cls, error_code=e.code, error_message=e.message, responses=())
    results.update(early)
    await refresh_after_write(ctx, {t for t, _ in results})
    by_topic: dict[str, list] = {}
    for (name, p), e in results.items():
        by_topic.setdefault(name, []).append(make(
            mod.ReassignablePartitionResponse, partition_index=p,
            error_code=e.code if e else ErrorCode.none, error_message=e.message if e else None))
    return make(cls, error_code=ErrorCode.none, error_message=None, responses=tuple(
        make(mod.ReassignableTopicResponse, name=t, partitions=tuple(ps))
        for t, ps in by_topic.items()))


@register(LIST, "list_partition_reassignments", 0, 0)
async def list_(ctx: RequestContext, request):
    mod = response_module(LIST, ctx.version)
    cls = response_schema(LIST, ctx.version)
    controller = ctx.broker.controller
    if not allowed(ctx, Op.DESCRIBE, Res.CLUSTER):
        return make(cls, error_code=ErrorCode.cluster_authorization_failed,
                    error_message="Cluster authorization failed.", topics=())
    if not controller.active:
        return make(cls, error_code=ErrorCode.not_controller,
                    error_message="This broker is not the controller", topics=())
    wanted = None
    if request.topics is not None:
        wanted = [(t.name, p) for t in request.topics for p in t.partition_indexes]
    try:
        found = await reassignment.ongoing(controller, wanted)
    except StoreError as exc:
        e = request_error(exc)
        return make(cls, error_code=e.code, error_message=e.message, topics=())
    by_topic: dict[str, list] = {}
    for r in found:
        by_topic.setdefault(r.topic, []).append(make(
            mod.OngoingPartitionReassignment, partition_index=r.partition,
            replicas=r.replicas, adding_replicas=r.adding, removing_replicas=r.removing))
    return make(cls, error_code=ErrorCode.none, error_message=None, topics=tuple(
        make(mod.OngoingTopicReassignment, name=t, partitions=tuple(ps))
        for t, ps in by_topic.items()))
