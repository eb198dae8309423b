"""DescribeProducers (key 61), version 0 (Kafka 4 serves 0).

Behaviour: for each partition, on its leader, the producers the partition's producer state
holds (kafka-transactions --describe-producers): producer id and epoch, the last sequence
and timestamp of its last batch, the coordinator epoch of its last marker and the first
offset of its open transaction (-1 for none).
Errors per partition: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER (not the leader
here, as Kafka's Partition.activeProducerState answers).
"""

from __future__ import annotations

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 61


@register(API_KEY, "describe_producers", 0, 0)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    replicas = ctx.broker.replicas

    def answer(topic: str, index: int):
        try:
            if not allowed(ctx, Op.READ, Res.TOPIC, topic):
                raise KafkaError(None, ErrorCode.topic_authorization_failed)
            p = replicas.leader_partition(topic, index)
        except KafkaError as e:
            return make(mod.PartitionResponse, partition_index=index, error_code=e.code,
                        error_message=e.message, active_producers=())
        producers = tuple(
            make(mod.ProducerState, producer_id=e.producer_id, producer_epoch=e.epoch,
                 last_sequence=e.last_seq, last_timestamp=e.last_timestamp,
                 coordinator_epoch=e.coordinator_epoch,
                 current_txn_start_offset=e.current_txn_first_offset)
            for e in sorted(p.log.producer_state.producers.values(),
                            key=lambda e: e.producer_id))
        return make(mod.PartitionResponse, partition_index=index, error_code=ErrorCode.none,
                    error_message=None, active_producers=producers)

    return make(response_schema(API_KEY, ctx.version), topics=tuple(
        make(mod.TopicResponse, name=t.name, partitions=tuple(
            answer(t.name, i) for i in t.partition_indexes))
        for t in request.topics))
