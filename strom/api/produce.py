"""Produce (key 0), advertised 0-12, served 3-12 (as Kafka 4 does: librdkafka needs min 0).

Behaviour: each partition's data must be exactly one v2 record batch. It is validated
(size, CRC, offsets, timestamps, keys on compacted topics), given offsets and appended by the
leader. acks=0 gets no response at all; acks=1 and acks=-1 are answered after the append
(acks=-1 waits for the ISR; with one replica that is at once). Idempotent batches are
deduplicated by producer id, epoch and sequence.
Errors per partition: UNKNOWN_TOPIC_OR_PARTITION (auto-create does not apply to Produce),
NOT_LEADER_OR_FOLLOWER, CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, INVALID_RECORD (with
record_errors), INVALID_TIMESTAMP, OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH,
NOT_ENOUGH_REPLICAS; INVALID_REQUIRED_ACKS for acks outside -1, 0, 1.
Version notes: v8+ record_errors and error_message; v10+ current_leader hints.
"""

from __future__ import annotations

import datetime

from strom.api.context import RequestContext
from strom.api.registry import CloseConnection, register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 0
NO_RESPONSE = object()
_EPOCH = datetime.datetime.fromtimestamp(0, datetime.UTC)


@register(API_KEY, "produce", 3, 12, advertised_min=0)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    replicas = ctx.broker.replicas
    acks = request.acks
    topics = []
    for topic in request.topic_data:
        parts = []
        for pd in topic.partition_data:
            error, message, record_errors = ErrorCode.none, None, ()
            base_offset, append_time, start = -1, None, -1
            try:
                if acks not in (-1, 0, 1):
                    raise KafkaError(f"Invalid required acks {acks}",
                                     ErrorCode.invalid_required_acks)
                if request.transactional_id is not None:
                    raise KafkaError("Transactions are not supported yet",
                                     ErrorCode.transactional_id_authorization_failed)
                if pd.records is None:
                    raise KafkaError("No record batch", ErrorCode.invalid_record)
                result = replicas.append(topic.name, pd.index, pd.records, acks)
                base_offset = result.base_offset
                if result.log_append_time >= 0:
                    append_time = _EPOCH + datetime.timedelta(
                        milliseconds=result.log_append_time)
                p = replicas.partitions.get((topic.name, pd.index))
                start = p.log.log_start_offset if p else -1
            except KafkaError as e:
                error, message = e.code, e.message
                record_errors = tuple(
                    make(mod.BatchIndexAndErrorMessage, batch_index=i,
                         batch_index_error_message=m)
                    for i, m in getattr(e, "record_errors", ()))
            parts.append(make(mod.PartitionProduceResponse, index=pd.index, error_code=error,
                              base_offset=base_offset, log_append_time=append_time,
                              log_start_offset=start, record_errors=record_errors,
                              error_message=message))
        topics.append(make(mod.TopicProduceResponse, name=topic.name,
                           partition_responses=tuple(parts)))
    if acks == 0:
        failed = [(t.name, p.index, p.error_code) for t in topics
                  for p in t.partition_responses if p.error_code != ErrorCode.none]
        if failed:
            raise CloseConnection(f"acks=0 produce failed: {failed[:3]}")
        return NO_RESPONSE
    return make(response_schema(API_KEY, ctx.version), responses=tuple(topics))
