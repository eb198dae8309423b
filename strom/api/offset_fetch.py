"""OffsetFetch (key 9), versions 1-9.

Behaviour: the committed offset, leader epoch and metadata of each requested partition
(all of the group's when topics is null, v2+); -1 and "" where nothing was committed.
Group-level errors: NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, INVALID_GROUP_ID
(v2+ in error_code; v1 repeats it in every partition). With an authorizer:
GROUP_AUTHORIZATION_FAILED without DESCRIBE on the group; a requested topic without
DESCRIBE gets TOPIC_AUTHORIZATION_FAILED, and such topics are left out of "all".
Version notes: v8+ asks for several groups at once; v7+ require_stable: partitions whose
offsets wait for a transaction's marker (TxnOffsetCommit) get UNSTABLE_OFFSET_COMMIT.
"""

from __future__ import annotations

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 9


def _fetch(ctx: RequestContext, group_id: str, topics, require_stable: bool):
    partitions = None if topics is None else [
        (t.name, p) for t in topics for p in t.partition_indexes]
    if not allowed(ctx, Op.DESCRIBE, Res.GROUP, group_id):
        return ErrorCode.group_authorization_failed, [] if partitions is None else [
            _Failed(t, p, ErrorCode.group_authorization_failed) for t, p in partitions]
    denied: list[_Failed] = []
    if partitions is not None:
        visible = {t for t, _ in partitions if allowed(ctx, Op.DESCRIBE, Res.TOPIC, t)}
        denied = [_Failed(t, p, ErrorCode.topic_authorization_failed)
                  for t, p in partitions if t not in visible]
        partitions = [(t, p) for t, p in partitions if t in visible]
    try:
        fetched = ctx.broker.groups.fetch_offsets(group_id, partitions, require_stable)
    except KafkaError as e:
        return e.code, [] if partitions is None else [
            _Failed(t, p, e.code) for t, p in partitions] + denied
    if partitions is None:  # all of the group's: only the topics it may describe
        fetched = [f for f in fetched if allowed(ctx, Op.DESCRIBE, Res.TOPIC, f.topic)]
    return ErrorCode.none, list(fetched) + denied


class _Failed:
    def __init__(self, topic: str, partition: int, error: ErrorCode) -> None:
        self.topic, self.partition, self.error = topic, partition, error
        self.offset, self.leader_epoch, self.metadata = -1, -1, ""


def _topics(mod, topic_cls: str, partition_cls: str, fetched, version: int):
    by_topic: dict[str, list] = {}
    for f in fetched:
        by_topic.setdefault(f.topic, []).append(make(
            getattr(mod, partition_cls), partition_index=f.partition,
            committed_offset=f.offset, committed_leader_epoch=f.leader_epoch,
            metadata=f.metadata, error_code=f.error))
    return tuple(make(getattr(mod, topic_cls), name=t, partitions=tuple(ps))
                 for t, ps in by_topic.items())


@register(API_KEY, "offset_fetch", 1, 9)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    cls = response_schema(API_KEY, ctx.version)
    stable = getattr(request, "require_stable", False)
    if ctx.version >= 8:
        groups = []
        for g in request.groups:
            error, fetched = _fetch(ctx, g.group_id, g.topics, stable)
            groups.append(make(mod.OffsetFetchResponseGroup, group_id=g.group_id,
                               error_code=error, topics=_topics(
                                   mod, "OffsetFetchResponseTopics",
                                   "OffsetFetchResponsePartitions", fetched, ctx.version)))
        return make(cls, groups=tuple(groups))
    error, fetched = _fetch(ctx, request.group_id, request.topics, stable)
    return make(cls, error_code=error, topics=_topics(
        mod, "OffsetFetchResponseTopic", "OffsetFetchResponsePartition", fetched, ctx.version))
