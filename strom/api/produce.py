"""Produce (key 0), advertised 0-12, served 3-12 (as Kafka 4 does: librdkafka needs min 0).

Behaviour: each partition's data must be exactly one v2 record batch. It is validated
(size, CRC, offsets, timestamps, keys on compacted topics), given offsets and appended by the
leader; where the records must be read (compacted topic, another compression.type) a
compressed or large batch is read off the event loop, and its records may decompress to at
most 16 x max.message.bytes (at least 16 MiB), else MESSAGE_TOO_LARGE. acks=0 gets no
response at all; acks=1 and acks=-1 are answered after the append (acks=-1 waits, without
blocking the connection's loop, until the high watermark passes the batch: every ISR member
has it). Idempotent batches are deduplicated by producer id, epoch and sequence.
Transactional batches need the request's transactional_id and open a transaction on the
partition (the transaction coordinator's verifier checks a producer's first batch on a
partition: KIP-890); a plain batch from a producer with a transaction open there is
INVALID_TXN_STATE, a transactional batch without a transactional_id
TRANSACTIONAL_ID_AUTHORIZATION_FAILED, a stale epoch INVALID_PRODUCER_EPOCH.
Errors per partition: INVALID_TOPIC_EXCEPTION for an internal topic (`__consumer_offsets`,
`__transaction_state`: only the coordinators write them; as in Kafka, a client whose
client id is `__admin_client` may), UNKNOWN_TOPIC_OR_PARTITION (auto-create does not apply
to Produce), NOT_LEADER_OR_FOLLOWER, CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, INVALID_RECORD (with
record_errors), INVALID_TIMESTAMP, OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH,
NOT_ENOUGH_REPLICAS, and for acks=-1 NOT_ENOUGH_REPLICAS_AFTER_APPEND (the ISR shrank below
min.insync.replicas while waiting) and REQUEST_TIMED_OUT (timeout_ms passed);
INVALID_REQUIRED_ACKS for acks outside -1, 0, 1.
Version notes: v8+ record_errors and error_message; v10+ current_leader hints; v12
(Transactions V2, KIP-890 part 2): the leader adds a transactional batch's partition to the
transaction itself (through the coordinator) instead of only verifying it.
With an authorizer: TOPIC_AUTHORIZATION_FAILED for a topic without WRITE. The bytes of
the batches count against producer_byte_rate (throttle_time_ms, then the channel is muted).
"""

from __future__ import annotations

import asyncio
import datetime

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.metadata import live_brokers
from strom.api.registry import CloseConnection, register
from strom.api.throttling import PRODUCE_QUOTA, quota_applies, record_quota
from strom.protocol import produce_response
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import (
    ResponseTemplate,
    make,
    response_module,
    response_schema,
)

API_KEY = 0
NO_RESPONSE = object()
_EPOCH = datetime.datetime.fromtimestamp(0, datetime.UTC)
# Kafka lets only this client id append to internal topics (its admin tools' id)
ADMIN_CLIENT_ID = "__admin_client"
TXN_V2_VERSION = 12  # from here the leader adds partitions to transactions implicitly


@register(API_KEY, "produce", 3, 12, advertised_min=0)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    replicas = ctx.broker.replicas
    acks = request.acks
    # a consumer's fetch parked on several of these partitions is answered once all are
    # appended, not by the first (as Kafka completes delayed fetches after the append)
    woken: dict[tuple[str, int], None] = {}
    try:
        results, waits = await _append_all(ctx, request, mod, woken)
    finally:
        replicas.wake_consumers(woken)
    if waits:
        if ctx.appended is not None and not all(
                replicas.replicated(name, index, end) for _, name, index, end in waits):
            ctx.appended()  # the connection may go on with its next Produce meanwhile
        # one after the other within one deadline: the request is answered when the last
        # partition is replicated (or failed), and each wait is woken directly
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout.total_seconds()
        for out, name, index, end in waits:
            try:
                await replicas.wait_for_replication(
                    name, index, end, max(deadline - loop.time(), 0) * 1000)
            except KafkaError as e:
                _fail(out, e, mod)
    quotas_set = quota_applies(ctx)
    if quotas_set:  # the throttle goes to the connection and the dispatcher
        record_quota(ctx, PRODUCE_QUOTA, sum(
            len(pd.records) for t in request.topic_data for pd in t.partition_data
            if pd.records is not None))
    leaders: set[int] = set()
    for name, parts in results:
        for out in parts:
            if out["error_code"] in (ErrorCode.not_leader_or_follower,
                                     ErrorCode.fenced_leader_epoch) and \
                    hasattr(mod, "LeaderIdAndEpoch"):  # v10+: where the leader is
                info = ctx.broker.cache.partition(name, out["index"])
                if info is not None and info.leader >= 0:
                    out["current_leader"] = make(mod.LeaderIdAndEpoch,
                                                 leader_id=info.leader,
                                                 leader_epoch=info.leader_epoch)
                    leaders.add(info.leader)
    # framed here when nothing can raise its throttle time (no client quota is set: the
    # dispatcher adds a request quota's throttle only to an entity)
    if acks != 0 and not quotas_set:
        if len(results) == 1 and len(results[0][1]) == 1:
            fast = _one_partition_response(ctx, mod, results[0][0], results[0][1][0])
            if fast is not None:
                return fast
        elif all(out["error_code"] == ErrorCode.none for _name, parts in results
                 for out in parts):
            return produce_response.encode_ok(ctx.version, ctx.header.correlation_id, [
                (name, [(out["index"], out["base_offset"], _append_time_ms(out),
                         out["log_start_offset"]) for out in parts])
                for name, parts in results])
    topics = [make(mod.TopicProduceResponse, name=name, partition_responses=tuple(
        make(mod.PartitionProduceResponse, **out) for out in parts)) for name, parts in results]
    if acks == 0:
        failed = [(t.name, p.index, p.error_code) for t in topics
                  for p in t.partition_responses if p.error_code != ErrorCode.none]
        if failed:
            raise CloseConnection(f"acks=0 produce failed: {failed[:3]}")
        return NO_RESPONSE
    endpoints = ()
    if leaders and hasattr(mod, "NodeEndpoint"):
        endpoints = tuple(make(mod.NodeEndpoint, node_id=i, host=h, port=port, rack=r)
                          for i, h, port, r in live_brokers(ctx) if i in leaders)
    return make(response_schema(API_KEY, ctx.version), responses=tuple(topics),
                node_endpoints=endpoints)


async def _append_all(ctx: RequestContext, request, mod, woken: dict
                      ) -> tuple[list[tuple[str, list[dict]]], list[tuple[dict, str, int, int]]]:
    """Each partition's batch appended (or its error): the answer's partitions per topic,
    and for acks=-1 what to wait for: (the partition's answer, topic, partition, end).
    The partitions appended go into `woken` (`ReplicaManager.append_produced`)."""
    replicas = ctx.broker.replicas
    acks = request.acks
    results: list[tuple[str, list[dict]]] = []
    waits: list[tuple[dict, str, int, int]] = []  # acks=-1: (out, topic, partition, end)
    writable: dict[str, bool] = {}
    for topic in request.topic_data:
        parts = []
        for pd in topic.partition_data:
            out = {"index": pd.index, "error_code": ErrorCode.none, "base_offset": -1,
                   "log_append_time": None, "log_start_offset": -1, "record_errors": (),
                   "error_message": None}
            try:
                if acks not in (-1, 0, 1):
                    raise KafkaError(f"Invalid required acks {acks}",
                                     ErrorCode.invalid_required_acks)
                if request.transactional_id is not None and not allowed(
                        ctx, Op.WRITE, Res.TRANSACTIONAL_ID, request.transactional_id):
                    raise KafkaError("Transactional Id authorization failed.",
                                     ErrorCode.transactional_id_authorization_failed)
                if not writable.setdefault(topic.name, allowed(ctx, Op.WRITE, Res.TOPIC,
                                                               topic.name)):
                    raise KafkaError(f"Not authorized to WRITE topic {topic.name!r}",
                                     ErrorCode.topic_authorization_failed)
                if pd.records is None:
                    raise KafkaError("No record batch", ErrorCode.invalid_record)
                result = await replicas.append_produced(
                    topic.name, pd.index, pd.records, acks,
                    internal_topics_allowed=ctx.header.client_id == ADMIN_CLIENT_ID,
                    transactional_id=request.transactional_id,
                    add_to_txn=ctx.version >= TXN_V2_VERSION, woken=woken)
                out["base_offset"] = result.base_offset
                if result.log_append_time >= 0:
                    out["log_append_time"] = _EPOCH + datetime.timedelta(
                        milliseconds=result.log_append_time)
                p = replicas.partitions.get((topic.name, pd.index))
                out["log_start_offset"] = p.log.log_start_offset if p else -1
                if acks == -1:
                    waits.append((out, topic.name, pd.index, result.last_offset + 1))
            except KafkaError as e:
                _fail(out, e, mod)
            parts.append(out)
        results.append((topic.name, parts))
    return results, waits


# The answer to a one-partition Produce without error (what a producer with linger.ms=0
# sends most) differs only in its correlation id, base offset and log start offset: it is
# encoded once per (version, topic, partition) and then patched (see ResponseTemplate).
_BASE_SENTINEL = 0x5E5E_0000_0B0B_0001
_START_SENTINEL = 0x5E5E_0000_0B0B_0002
MAX_TEMPLATES = 4096
_templates: dict[tuple[int, str, int], ResponseTemplate | None] = {}


def answer_template(version: int, topic: str, index: int) -> ResponseTemplate | None:
    """The template of a one-partition answer without error, once `handle` has built it
    (for strom.api.fast_path); None until then."""
    return _templates.get((version, topic, index)) or None


def _one_partition_response(ctx: RequestContext, mod, topic: str, out: dict) -> bytes | None:
    if out["error_code"] != ErrorCode.none or out["log_append_time"] is not None \
            or out.get("current_leader") is not None:
        return None
    key = (ctx.version, topic, out["index"])
    template = _templates.get(key, False)
    if template is False:
        if len(_templates) >= MAX_TEMPLATES:
            _templates.clear()
        partition = make(mod.PartitionProduceResponse, **dict(
            out, base_offset=_BASE_SENTINEL, log_start_offset=_START_SENTINEL))
        response = make(response_schema(API_KEY, ctx.version), node_endpoints=(),
                        responses=(make(mod.TopicProduceResponse, name=topic,
                                        partition_responses=(partition,)),))
        template = ResponseTemplate.build(response, (_BASE_SENTINEL, _START_SENTINEL))
        _templates[key] = template
    if template is None:
        return None
    return template.render(ctx.header.correlation_id, out["base_offset"],
                           out["log_start_offset"])


def _append_time_ms(out: dict) -> int:
    """A partition's log_append_time as the answer's int64 (-1: none)."""
    stamp = out["log_append_time"]
    return -1 if stamp is None else (stamp - _EPOCH) // datetime.timedelta(milliseconds=1)


def _fail(out: dict, e: KafkaError, mod) -> None:
    out["error_code"], out["error_message"] = e.code, e.message
    out["base_offset"], out["log_append_time"], out["log_start_offset"] = -1, None, -1
    # record_errors from v8; an older version carries only the error code (Kafka's too)
    out["record_errors"] = tuple(
        make(mod.BatchIndexAndErrorMessage, batch_index=i, batch_index_error_message=m)
        for i, m in getattr(e, "record_errors", ())) \
        if hasattr(mod, "BatchIndexAndErrorMessage") else ()
