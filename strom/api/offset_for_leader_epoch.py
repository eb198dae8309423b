"""OffsetForLeaderEpoch (key 23), versions 2-4 (what kio parses; 0-1 are deprecated).

Behaviour per partition (leader only, for followers and consumers alike, as Kafka's
ReplicaManager.lastOffsetForLeaderEpoch): the end offset of the requested leader epoch, from
the partition log's leader epoch cache (Kafka's LeaderEpochFileCache.endOffsetFor):
  requested == the latest epoch      (epoch, log end offset)
  between cached epochs              (largest cached epoch <= requested,
                                      start offset of the next larger cached epoch)
  below the first cached epoch       (requested, start offset of the first cached epoch)
  -1, above the latest, none cached  (-1, -1): UNDEFINED
A follower (replica_id >= 0, v3+) truncates its log to that offset after a leader change;
a consumer (KIP-320) checks its position for truncation the same way.
Errors: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH (the
request's current_leader_epoch is older than the leader's), UNKNOWN_LEADER_EPOCH (newer).
With an authorizer: TOPIC_AUTHORIZATION_FAILED without DESCRIBE on the topic; a follower
(replica_id >= 0) needs CLUSTER_ACTION (CLUSTER_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from strom.api.answers import attempt, each_partition
from strom.api.authorization import Op, Res, allowed, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 23


def lookup(ctx: RequestContext, topic: str, index: int, current_leader_epoch: int,
           leader_epoch: int) -> tuple[int, int]:
    """(leader epoch, end offset) for one partition; raises KafkaError."""
    check(ctx, Op.DESCRIBE, Res.TOPIC, topic)
    p = ctx.broker.replicas.leader_partition(topic, index, current_leader_epoch)
    return p.log.end_offset_for_epoch(leader_epoch)


@register(API_KEY, "offset_for_leader_epoch", 2, 4)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    if getattr(request, "replica_id", -1) >= 0 and \
            not allowed(ctx, Op.CLUSTER_ACTION, Res.CLUSTER):
        return make(response_schema(API_KEY, ctx.version), topics=tuple(
            make(mod.OffsetForLeaderTopicResult, topic=t.topic, partitions=tuple(
                make(mod.EpochEndOffset, error_code=ErrorCode.cluster_authorization_failed,
                     partition=p.partition, leader_epoch=-1, end_offset=-1)
                for p in t.partitions)) for t in request.topics))

    def answer(t, p):
        (epoch, end_offset), error = attempt(
            lookup, ctx, t.topic, p.partition, getattr(p, "current_leader_epoch", -1),
            p.leader_epoch, failed=(-1, -1))
        return make(mod.EpochEndOffset, error_code=error, partition=p.partition,
                    leader_epoch=epoch, end_offset=end_offset)

    return make(response_schema(API_KEY, ctx.version), topics=each_partition(
        request.topics, answer,
        lambda t, parts: make(mod.OffsetForLeaderTopicResult, topic=t.topic, partitions=parts)))
