"""OffsetCommit (key 8), versions 2-9.

Behaviour: stores each partition's offset, leader epoch and metadata string in
`__consumer_offsets`. A member commits with its generation and member id; a standalone
consumer (generation -1, no member id) may commit to a group with no members. Errors:
per partition OFFSET_METADATA_TOO_LARGE (offset.metadata.max.bytes),
UNKNOWN_TOPIC_OR_PARTITION; for the whole request UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION,
REBALANCE_IN_PROGRESS (while the group completes a rebalance), FENCED_INSTANCE_ID,
NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, INVALID_GROUP_ID. With an authorizer:
GROUP_AUTHORIZATION_FAILED on every partition without READ on the group, else
TOPIC_AUTHORIZATION_FAILED on the partitions of topics without READ (the rest commit).
Version notes: v2-4 retention_time is ignored (offsets.retention.minutes applies, as in
Kafka 2.1+); v6+ committed_leader_epoch.
"""

from __future__ import annotations

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.coordinator.group_results import OffsetCommitRequest
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 8


def requested(request) -> list[OffsetCommitRequest]:
    """The offsets an OffsetCommit or TxnOffsetCommit request asks to commit."""
    return [OffsetCommitRequest(t.name, p.partition_index, p.committed_offset,
                                getattr(p, "committed_leader_epoch", -1),
                                p.committed_metadata)
            for t in request.topics for p in t.partitions]


def answer(api_key: int, version: int, results: list[tuple[str, int, int]], prefix: str):
    """The response of `results` (topic, partition, code); `prefix` names kio's classes
    (OffsetCommitResponse, TxnOffsetCommitResponse)."""
    mod = response_module(api_key, version)
    by_topic: dict[str, list] = {}
    for topic, partition, code in results:
        by_topic.setdefault(topic, []).append(make(
            getattr(mod, f"{prefix}Partition"), partition_index=partition, error_code=code))
    return make(response_schema(api_key, version), topics=tuple(
        make(getattr(mod, f"{prefix}Topic"), name=t, partitions=tuple(ps))
        for t, ps in by_topic.items()))


@register(API_KEY, "offset_commit", 2, 9)
async def handle(ctx: RequestContext, request):
    wanted = requested(request)
    if not allowed(ctx, Op.READ, Res.GROUP, request.group_id):
        results = [(o.topic, o.partition, ErrorCode.group_authorization_failed)
                   for o in wanted]
        wanted = []
    else:
        readable = {t.name for t in request.topics if allowed(ctx, Op.READ, Res.TOPIC, t.name)}
        results = [(o.topic, o.partition, ErrorCode.topic_authorization_failed)
                   for o in wanted if o.topic not in readable]
        wanted = [o for o in wanted if o.topic in readable]
    try:
        if wanted:
            results += await ctx.broker.groups.commit_offsets(
                request.group_id, request.generation_id_or_member_epoch, request.member_id,
                getattr(request, "group_instance_id", None), wanted)
    except KafkaError as e:
        results += [(o.topic, o.partition, e.code) for o in wanted]
    return answer(API_KEY, ctx.version, results, "OffsetCommitResponse")
