"""ListOffsets (key 2), versions 1-9.

Behaviour per partition (leader only):
  -2 EARLIEST      the log start offset
  -1 LATEST        the high watermark: the next offset a consumer will see (the log end
                   offset for replica_id >= 0, the last stable offset for read_committed)
  -3 MAX_TIMESTAMP the offset and timestamp of the record with the largest timestamp
  -4 EARLIEST_LOCAL the log start offset (no tiered storage)
  -5 LATEST_TIERED -1 (no tiered storage)
  t >= 0           the first offset whose timestamp is >= t (time index, then a scan);
                   offset -1 and timestamp -1 when there is none
isolation_level READ_COMMITTED (v2+) bounds LATEST and the lookups by the last stable
offset instead of the high watermark, as Kafka does.
Errors: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER, FENCED/UNKNOWN_LEADER_EPOCH.
"""

from __future__ import annotations

from strom.api.answers import attempt, each_partition
from strom.api.authorization import Op, Res, check
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 2
LATEST, EARLIEST, MAX_TIMESTAMP, EARLIEST_LOCAL, LATEST_TIERED = -1, -2, -3, -4, -5
READ_COMMITTED = 1


def lookup(ctx: RequestContext, topic: str, index: int, timestamp: int, epoch: int,
           replica_id: int, isolation_level: int = 0) -> tuple[int, int, int]:
    """(timestamp, offset, leader epoch) for one partition."""
    check(ctx, Op.DESCRIBE, Res.TOPIC, topic)
    p = ctx.broker.replicas.leader_partition(topic, index, epoch)
    plog = p.log
    if replica_id >= 0:
        limit = plog.log_end_offset
    elif isolation_level == READ_COMMITTED:
        limit = plog.last_stable_offset
    else:
        limit = p.high_watermark
    if timestamp == LATEST:
        return -1, limit, p.leader_epoch
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        return -1, plog.log_start_offset, p.leader_epoch
    if timestamp == LATEST_TIERED:
        return -1, -1, -1
    if timestamp == MAX_TIMESTAMP:
        found = plog.max_timestamp_offset(limit)
    elif timestamp < 0:
        raise KafkaError(f"Invalid timestamp {timestamp}", ErrorCode.invalid_request)
    else:
        found = plog.offset_for_timestamp(timestamp, limit)
    if found is None:
        return -1, -1, -1
    offset, ts = found
    return ts, offset, _epoch_of(plog.leader_epochs, offset)


def _epoch_of(epochs: list[tuple[int, int]], offset: int) -> int:
    result = -1
    for e, start in epochs:
        if start <= offset:
            result = e
    return result


@register(API_KEY, "list_offsets", 1, 9)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)

    def answer(t, p):
        (ts, offset, epoch), error = attempt(
            lookup, ctx, t.name, p.partition_index, p.timestamp,
            getattr(p, "current_leader_epoch", -1), request.replica_id,
            getattr(request, "isolation_level", 0), failed=(-1, -1, -1))
        return make(mod.ListOffsetsPartitionResponse, partition_index=p.partition_index,
                    error_code=error, timestamp=ts, offset=offset, leader_epoch=epoch)

    return make(response_schema(API_KEY, ctx.version), topics=each_partition(
        request.topics, answer,
        lambda t, parts: make(mod.ListOffsetsTopicResponse, name=t.name, partitions=parts)))
