"""Metadata (key 3), versions 0-12.

Behaviour: brokers with the endpoint of the listener the client came through, cluster id,
controller id, and each requested topic (all topics when the list is null; none when it is
empty). An unknown topic is created when `allow_auto_topic_creation` (v4+, always for
v0-3) and `auto.create.topics.enable` both say so, with num.partitions and
default.replication.factor: the response then says LEADER_NOT_AVAILABLE for it, as Kafka
does, and the client asks again. Invalid names get INVALID_TOPIC_EXCEPTION.
Version notes: v10+ topic ids (v12 may ask by id), v8-10 authorized operations are
INT32_MIN unless asked for.
With an authorizer: listing all topics shows only those the principal may DESCRIBE; a
named one it may not gets TOPIC_AUTHORIZATION_FAILED, as does an unknown one it may not
CREATE (CREATE on the cluster or the topic) when auto-creation applies.
"""

from __future__ import annotations

import logging

from strom.api.authorization import NOT_ASKED, Op, Res, allowed, operations
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.cluster import topic_names
from strom.cluster.controller import NewTopic
from strom.cluster.store import StoreError
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

log = logging.getLogger(__name__)

API_KEY = 3


def live_brokers(ctx: RequestContext) -> list[tuple[int, str, int, str | None]]:
    """(id, host, port, rack) of every live broker on the client's listener: registered,
    and not found dead while its ZooKeeper session lingers (cluster/liveness.py)."""
    out = []
    dead = ctx.broker.controller.liveness.dead
    for b in sorted(ctx.broker.cache.brokers.values(), key=lambda b: b.broker_id):
        if b.broker_id in dead:
            continue
        e = ctx.broker.cache.endpoint(b.broker_id, ctx.listener)
        if e is not None:
            out.append((b.broker_id, e.host, e.port, b.rack))
    return out


def brokers_entities(ctx: RequestContext, cls):
    return tuple(make(cls, node_id=i, host=h, port=p, rack=r) for i, h, p, r in
                 live_brokers(ctx))


def partition_entities(ctx: RequestContext, info, cls):
    live = set(ctx.broker.controller.live_brokers())
    failed = ctx.broker.cache.failed_replicas  # in a failed log dir (KIP-112)
    parts = []
    for p in sorted(info.partitions.values(), key=lambda p: p.partition):
        gone = failed.get((info.name, p.partition), frozenset())
        offline = tuple(b for b in p.replicas if b not in live or b in gone)
        leader_ok = p.leader >= 0 and p.leader in live
        parts.append(make(
            cls,
            error_code=ErrorCode.none if leader_ok else ErrorCode.leader_not_available,
            partition_index=p.partition, leader_id=p.leader if leader_ok else -1,
            leader_epoch=p.leader_epoch, replica_nodes=tuple(p.replicas),
            isr_nodes=tuple(p.isr), offline_replicas=offline))
    return tuple(parts)


def may_create(ctx: RequestContext, topic: str) -> bool:
    """CREATE on the cluster or on the topic (as KafkaApis)."""
    return allowed(ctx, Op.CREATE, Res.CLUSTER) or allowed(ctx, Op.CREATE, Res.TOPIC, topic)


async def auto_create(ctx: RequestContext, name: str) -> ErrorCode:
    try:
        await ctx.broker.controller.create_topic(NewTopic(name, -1, -1))
        await ctx.broker.cache.refresh_now({name})
        return ErrorCode.leader_not_available if ctx.broker.cache.topic(name) is None \
            else ErrorCode.none
    except StoreError:  # ZooKeeper did not answer: the client asks again, as for a new topic
        return ErrorCode.leader_not_available
    except KafkaError as e:
        if e.code == ErrorCode.topic_already_exists:
            return ErrorCode.none
        return e.code


@register(API_KEY, "metadata", 0, 12)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    cache = ctx.broker.cache
    allow_auto = getattr(request, "allow_auto_topic_creation", True) and \
        ctx.broker.config.get("auto.create.topics.enable")
    if request.topics is None or (ctx.version == 0 and not request.topics):
        # all topics: only those the principal may describe
        wanted = [(name, None) for name in sorted(cache.topics)
                  if allowed(ctx, Op.DESCRIBE, Res.TOPIC, name)]
    else:
        wanted = []
        for t in request.topics:
            name = t.name
            tid = getattr(t, "topic_id", None)
            if name is None and tid is not None:
                info = cache.topic_by_id(tid)
                name = info.name if info else None
            wanted.append((name, tid))
    topics = []
    for name, tid in wanted:
        if name is None:
            # the response's name is nullable from v12 only
            topics.append(make(mod.MetadataResponseTopic, error_code=ErrorCode.unknown_topic_id,
                               name=None if ctx.version >= 12 else "", topic_id=tid,
                               partitions=()))
            continue
        if request.topics is not None and not allowed(ctx, Op.DESCRIBE, Res.TOPIC, name):
            topics.append(make(mod.MetadataResponseTopic,
                               error_code=ErrorCode.topic_authorization_failed, name=name,
                               topic_id=None, is_internal=False, partitions=(),
                               topic_authorized_operations=NOT_ASKED))
            continue
        info = cache.topic(name)
        error = ErrorCode.none
        if info is None:
            try:
                topic_names.validate(name)
                error = ErrorCode.unknown_topic_or_partition
            except KafkaError as e:
                error = e.code
            if error == ErrorCode.unknown_topic_or_partition and allow_auto \
                    and request.topics is not None and not topic_names.is_internal(name):
                error = await auto_create(ctx, name) if may_create(ctx, name) \
                    else ErrorCode.topic_authorization_failed
                info = cache.topic(name)
                if info is not None and error == ErrorCode.none:
                    error = ErrorCode.none
        if info is None:
            topics.append(make(mod.MetadataResponseTopic, error_code=error, name=name,
                               topic_id=None, is_internal=False, partitions=()))
            continue
        topics.append(make(
            mod.MetadataResponseTopic, error_code=error, name=info.name,
            topic_id=info.topic_id, is_internal=info.is_internal,
            partitions=partition_entities(ctx, info, mod.MetadataResponsePartition),
            topic_authorized_operations=operations(ctx, Res.TOPIC, info.name)
            if getattr(request, "include_topic_authorized_operations", False)
            else NOT_ASKED))
    return make(response_schema(API_KEY, ctx.version),
                brokers=brokers_entities(ctx, mod.MetadataResponseBroker),
                cluster_id=cache.cluster_id, controller_id=cache.controller_id,
                topics=tuple(topics),
                cluster_authorized_operations=operations(ctx, Res.CLUSTER)
                if getattr(request, "include_cluster_authorized_operations", False)
                else NOT_ASKED)
