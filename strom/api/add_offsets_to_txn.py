"""AddOffsetsToTxn (key 25), versions 0-4.

Behaviour: adds the group's partition of `__consumer_offsets` to the producer's
transaction, so TxnOffsetCommit may write there and the markers reach it. Errors as
AddPartitionsToTxn: INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED, CONCURRENT_TRANSACTIONS,
NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS; INVALID_GROUP_ID for an empty group id.
With an authorizer: WRITE on the transactional id, READ on the group.
Version notes: PRODUCER_FENCED from v2, INVALID_PRODUCER_EPOCH before.
"""

from __future__ import annotations

from strom.api.answers import fenced
from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.coordinator.group_coordinator import OFFSETS_TOPIC
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_schema

API_KEY = 25


@register(API_KEY, "add_offsets_to_txn", 0, 4)
async def handle(ctx: RequestContext, request):
    cls = response_schema(API_KEY, ctx.version)
    if not allowed(ctx, Op.WRITE, Res.TRANSACTIONAL_ID, request.transactional_id):
        return make(cls, error_code=ErrorCode.transactional_id_authorization_failed)
    if not allowed(ctx, Op.READ, Res.GROUP, request.group_id):
        return make(cls, error_code=ErrorCode.group_authorization_failed)
    if not request.group_id:
        return make(cls, error_code=ErrorCode.invalid_group_id)
    try:
        if ctx.broker.cache.topic(OFFSETS_TOPIC) is None:
            await ctx.broker.groups.find_coordinator(request.group_id)  # creates the topic
        partition = ctx.broker.groups.partition_for(request.group_id)
        await ctx.broker.transactions.add_partitions(
            request.transactional_id, request.producer_id, request.producer_epoch,
            {(OFFSETS_TOPIC, partition)})
    except KafkaError as e:
        return make(cls, error_code=fenced(e.code, ctx.version, 2))
    return make(cls, error_code=ErrorCode.none)
