"""Fetch (key 1), versions 4-17.

Behaviour: reads whole batches from each requested partition, starting with the batch that
holds fetch_offset, up to the high watermark (followers: the log end offset). max_bytes
bounds the response and partition_max_bytes each partition, but the first non-empty
partition always returns at least one whole batch, as Kafka does. If fewer than min_bytes
are available the request parks (without blocking the loop) until an append to one of its
partitions or max_wait_ms. Records are sent as file slices (zero-copy where the loop allows).
Fetch sessions (KIP-227, strom.api.fetch_session): session_epoch -1 is a sessionless full
fetch (the common path, kept lean: librdkafka and aiokafka always fetch so; strom's
follower fetcher opens a session, as Kafka's; strom.api.fast_path serves a consumer's
sessionless fetch, and an incremental one in a consumer's session with `session_reads`
and `session_topics` below); epoch 0 opens a session (session_id in the response, 0 when
the cache is full); a later epoch must be the session's expected one (else INVALID_FETCH_SESSION_EPOCH;
an unknown session FETCH_SESSION_ID_NOT_FOUND, a v12 request in a v13 session or the
reverse FETCH_SESSION_TOPIC_ID_ERROR), carries only changed partitions and
forgotten_topics_data, and is answered with only the partitions that have records, a new
high watermark / LSO / log start offset, or an error (the Java client and kafka-python
fetch so). isolation_level READ_COMMITTED (1) reads up to the last stable offset and lists
the aborted transactions (producer id, first offset) that overlap the records returned, so
the client drops their records; READ_UNCOMMITTED (0) reads to the high watermark. Every
answer carries the partition's last stable offset.
Errors per partition: OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID
(v13+), NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, CORRUPT_MESSAGE
(a batch on disk that cannot be read; the batches before it are served), KAFKA_STORAGE_ERROR
(a failed read). A follower fetch (replica_id >= 0) is checked before it counts: a replica
id that is not one of the partition's followers gets NOT_LEADER_OR_FOLLOWER (or
UNKNOWN_LEADER_EPOCH when it names the current epoch), an offset outside the log
OFFSET_OUT_OF_RANGE, and neither moves the follower's state or the high watermark.
With an authorizer: TOPIC_AUTHORIZATION_FAILED for a topic the consumer may not READ, and
for every partition of a follower fetch without CLUSTER_ACTION on the cluster.
A consumer's response bytes count against consumer_byte_rate (its max_bytes capped at what
the quota allows within the measured windows): over it, the response carries
throttle_time_ms and is empty (in a fetch session it keeps its records), and the channel is
muted.
Every partition carries a record set, empty on an error (never null: librdkafka fails the
whole response on a null one, e.g. for a topic id deleted under a running consumer).
Version notes: v13+ names topics by id; v11+ preferred_read_replica is always -1.
"""

from __future__ import annotations

from collections.abc import Callable

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.fetch_session import PartitionRequest, SessionError
from strom.api.registry import register
from strom.api.throttling import FETCH_QUOTA, fetch_bytes_cap, record_quota, unrecord_quota
from strom.protocol import fetch_response
from strom.protocol.errors import ErrorCode
from strom.replication.replica_manager import FetchPartitionRequest

API_KEY = 1


class RawResponse:
    """A response already framed as parts (bytes and file slices)."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list, size: int) -> None:
        self.parts = parts
        self.size = size


@register(API_KEY, "fetch", 4, 17)
async def handle(ctx: RequestContext, request):
    cache = ctx.broker.cache
    replica_id = request.replica_id if hasattr(request, "replica_id") else \
        request.replica_state.replica_id
    session_id = getattr(request, "session_id", 0)
    if session_id or getattr(request, "session_epoch", -1) != -1:
        if request.session_epoch != -1:
            return await _fetch_in_session(ctx, request, replica_id)
        # a full fetch that closes its session: the sessionless path below
        ctx.broker.fetch_sessions.remove(session_id)
    wanted: list[FetchPartitionRequest] = []
    order: list[tuple[str, object, list[int]]] = []
    unknown_ids: list[tuple[object, list[int]]] = []
    denied: set[str] = set()
    for t in request.topics:
        if ctx.version >= 13:
            info = cache.topic_by_id(t.topic_id)
            if info is None:
                unknown_ids.append((t.topic_id, [p.partition for p in t.partitions]))
                continue
            name = info.name
        else:
            name = t.topic
        order.append((name, t, [p.partition for p in t.partitions]))
        if not _may_read(ctx, name, replica_id):
            denied.add(name)
            continue
        for p in t.partitions:
            wanted.append(FetchPartitionRequest(name, p.partition, p.fetch_offset,
                                                p.partition_max_bytes,
                                                getattr(p, "current_leader_epoch", -1),
                                                getattr(p, "log_start_offset", -1)))
    results = await ctx.broker.replicas.fetch(
        wanted, fetch_bytes_cap(
            ctx, request.max_bytes if hasattr(request, "max_bytes") else 0x7FFFFFFF,
            replica_id),
        request.min_bytes, int(request.max_wait.total_seconds() * 1000), replica_id,
        request.isolation_level)
    by_tp = {(r.topic, r.partition): r for r in results}
    topics = []
    for name, _t, partitions in order:
        info = cache.topic(name)
        parts = []
        for index in partitions:
            if name in denied:
                parts.append(fetch_response.FetchPartitionData(
                    index, ErrorCode.topic_authorization_failed, -1, -1, -1, b""))
                continue
            parts.append(partition_data(cache, by_tp[(name, index)], request.isolation_level))
        topics.append(fetch_response.FetchTopicData(
            name, info.topic_id if info else None, parts))
    for topic_id, partitions in unknown_ids:
        topics.append(fetch_response.FetchTopicData("", topic_id, [
            fetch_response.FetchPartitionData(i, ErrorCode.unknown_topic_id, -1, -1, -1, b"")
            for i in partitions]))
    return _framed(ctx, replica_id, ErrorCode.none, 0, topics)


def partition_data(cache, r, isolation_level: int) -> fetch_response.FetchPartitionData:
    """A partition's answer in a sessionless fetch, from its read result."""
    code = r.error.code if r.error else ErrorCode.none
    leader = None
    if code in (ErrorCode.not_leader_or_follower, ErrorCode.fenced_leader_epoch):
        pinfo = cache.partition(r.topic, r.partition)
        if pinfo is not None:
            leader = (pinfo.leader, pinfo.leader_epoch)
    return fetch_response.FetchPartitionData(
        r.partition, code, r.high_watermark, r.last_stable_offset, r.log_start_offset,
        r.read.slice if r.read and r.read.slice else b"",
        aborted_transactions=_aborted(r, isolation_level), current_leader=leader)


def _framed(ctx: RequestContext, replica_id: int, error: ErrorCode, session_id: int,
            topics: list) -> RawResponse:
    """The response; a consumer's bytes count against consumer_byte_rate. Over it, the
    response carries throttle_time_ms; without a session it is empty, as Kafka answers a
    throttled fetch, and its bytes are not counted (the consumer fetches them again after
    the throttle time); in a session the records go out (the session has taken them as
    sent)."""
    parts, size = fetch_response.encode(ctx.version, ctx.header.correlation_id, 0, error,
                                        session_id, topics)
    if replica_id < 0:
        throttle_ms = record_quota(ctx, FETCH_QUOTA, size)
        if throttle_ms:
            if session_id == 0:
                unrecord_quota(ctx, FETCH_QUOTA, size)
                topics = []
            parts, size = fetch_response.encode(ctx.version, ctx.header.correlation_id,
                                                throttle_ms, error, session_id, topics)
    return RawResponse(parts, size)


def _may_read(ctx: RequestContext, topic: str, replica_id: int) -> bool:
    """A follower needs CLUSTER_ACTION on the cluster, a consumer READ on the topic."""
    if replica_id >= 0:
        return allowed(ctx, Op.CLUSTER_ACTION, Res.CLUSTER)
    return allowed(ctx, Op.READ, Res.TOPIC, topic)


async def _fetch_in_session(ctx: RequestContext, request, replica_id: int) -> RawResponse:
    """A fetch that opens (epoch 0) or continues a session."""
    cache = ctx.broker.cache
    by_id = ctx.version >= 13
    entries = [PartitionRequest(t.topic_id if by_id else t.topic, p.partition, p.fetch_offset,
                                p.partition_max_bytes, getattr(p, "current_leader_epoch", -1),
                                getattr(p, "log_start_offset", -1))
               for t in request.topics for p in t.partitions]
    forgotten = [(t.topic_id if by_id else t.topic, index)
                 for t in request.forgotten_topics_data for index in t.partitions]
    context = ctx.broker.fetch_sessions.new_context(
        request.session_id, request.session_epoch, replica_id >= 0, by_id, entries, forgotten)
    if isinstance(context, SessionError):
        return session_error_response(ctx.version, ctx.header.correlation_id, context)
    partitions, names, wanted, denied = session_reads(
        cache, context, by_id, lambda name: _may_read(ctx, name, replica_id))
    results = await ctx.broker.replicas.fetch(
        wanted, fetch_bytes_cap(ctx, request.max_bytes, replica_id), request.min_bytes,
        int(request.max_wait.total_seconds() * 1000), replica_id, request.isolation_level)
    by_tp = {(r.topic, r.partition): r for r in results}
    topics = session_topics(cache, context, partitions, names, by_tp, denied,
                            request.isolation_level, by_id)
    return _framed(ctx, replica_id, context.error_code, context.session_id, topics)


def session_reads(cache, context, by_id: bool, may_read: Callable[[str], bool] | None = None
                  ) -> tuple[list[PartitionRequest], list[str | None],
                             list[FetchPartitionRequest], set[str]]:
    """What a fetch in a session reads, from its context: (the session's partitions in
    fetch order, their topic names (None for an unknown topic id), the reads of those
    known and allowed (`may_read`; None: no authorizer), the topics denied). Shared with
    the fast path, strom.api.fast_path."""
    partitions = context.partitions()
    names: list[str | None] = []
    wanted: list[FetchPartitionRequest] = []
    denied: set[str] = set()
    for e in partitions:
        if by_id:
            info = cache.topic_by_id(e.key)
            name = info.name if info is not None else None
        else:
            name = e.key
        names.append(name)
        if name is None:
            continue
        if may_read is not None and not may_read(name):
            denied.add(name)
        else:
            wanted.append(FetchPartitionRequest(name, e.partition, e.fetch_offset, e.max_bytes,
                                                e.leader_epoch, e.log_start_offset))
    return partitions, names, wanted, denied


def session_error_response(version: int, correlation_id: int, error: SessionError
                           ) -> RawResponse:
    """The answer to a fetch that names a session it cannot use: the error alone (shared
    with the fast path, strom.api.fast_path)."""
    parts, size = fetch_response.encode(version, correlation_id, 0, error.error_code, 0, [])
    return RawResponse(parts, size)


def session_topics(cache, context, partitions: list[PartitionRequest], names: list[str | None],
                   by_tp: dict, denied: set[str], isolation_level: int, by_id: bool
                   ) -> list[fetch_response.FetchTopicData]:
    """The topics a session's answer carries: every partition of `partitions` (named
    `names`, None for an unknown topic id) is passed to `context.respond` with its read
    result in `by_tp`, and those it keeps are answered (an incremental session keeps only
    what changed; shared with the fast path, strom.api.fast_path)."""
    rows = []
    for e, name in zip(partitions, names, strict=True):
        r = by_tp.get((name, e.partition)) if name is not None else None
        if name in denied:
            rows.append((e, ErrorCode.topic_authorization_failed, -1, -1, -1, 0))
        elif r is None:
            rows.append((e, ErrorCode.unknown_topic_id, -1, -1, -1, 0))
        else:
            rows.append((e, r.error.code if r.error else ErrorCode.none, r.high_watermark,
                         r.last_stable_offset, r.log_start_offset, r.size))
    topics: list[fetch_response.FetchTopicData] = []
    current = None
    for i in context.respond(rows):
        e, code, hw, lso, start, _n = rows[i]
        name = names[i]
        r = by_tp.get((name, e.partition)) if name is not None else None
        leader = None
        if code in (ErrorCode.not_leader_or_follower, ErrorCode.fenced_leader_epoch):
            pinfo = cache.partition(name, e.partition)
            if pinfo is not None:
                leader = (pinfo.leader, pinfo.leader_epoch)
        data = fetch_response.FetchPartitionData(
            e.partition, code, hw, lso, start,
            r.read.slice if r is not None and r.read and r.read.slice else b"",
            aborted_transactions=_aborted(r, isolation_level) if r is not None and
            not code else None,
            current_leader=leader)
        if current is None or current[0] != e.key:
            info = cache.topic(name) if name is not None else None
            current = (e.key, [])
            topics.append(fetch_response.FetchTopicData(
                name or "", e.key if by_id else (info.topic_id if info else None), current[1]))
        current[1].append(data)
    return topics


def _aborted(r, isolation_level: int) -> tuple[tuple[int, int], ...] | None:
    """The aborted transactions to list: null for read_uncommitted and on error."""
    if r.error or not isolation_level:
        return None
    return r.aborted or ()
