"""InitProducerId (key 22), versions 0-5.

Behaviour: for an idempotent producer (transactional_id null) hands out a new producer id
with epoch 0 each time, as Kafka does. With a transactional id the transaction coordinator
answers (TransactionCoordinator.init_producer_id): the first call gets a new producer id at
epoch 0, later calls the same id at epoch + 1 (a new id when the epoch is exhausted),
which fences every older producer of the id; an open transaction is first aborted
(CONCURRENT_TRANSACTIONS: the client retries). Errors: INVALID_REQUEST (empty id),
INVALID_TRANSACTION_TIMEOUT (not in 1..transaction.max.timeout.ms), NOT_COORDINATOR,
COORDINATOR_LOAD_IN_PROGRESS, CONCURRENT_TRANSACTIONS, PRODUCER_FENCED.
Version notes: v3+ producer_id/producer_epoch of a producer recovering its epoch
(KIP-360); PRODUCER_FENCED from v4, INVALID_PRODUCER_EPOCH before.
With an authorizer (as Kafka since KIP-679): an idempotent producer needs IDEMPOTENT_WRITE
on the cluster or WRITE on some topic, else CLUSTER_AUTHORIZATION_FAILED; a transactional
one needs WRITE on its transactional id, else TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

from strom.api.answers import fenced
from strom.api.authorization import Op, Res, allowed, allowed_any
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_schema

API_KEY = 22


@register(API_KEY, "init_producer_id", 0, 5)
async def handle(ctx: RequestContext, request):
    cls = response_schema(API_KEY, ctx.version)
    if request.transactional_id is None:
        if not (allowed(ctx, Op.IDEMPOTENT_WRITE, Res.CLUSTER)
                or allowed_any(ctx, Op.WRITE, Res.TOPIC)):
            return make(cls, error_code=ErrorCode.cluster_authorization_failed,
                        producer_id=-1, producer_epoch=-1)
        try:
            pid = await ctx.broker.producer_ids.generate()
        except KafkaError as e:  # no producer id block: the store does not answer
            return make(cls, error_code=e.code, producer_id=-1, producer_epoch=-1)
        return make(cls, error_code=ErrorCode.none, producer_id=pid, producer_epoch=0)
    if not allowed(ctx, Op.WRITE, Res.TRANSACTIONAL_ID, request.transactional_id):
        return make(cls, error_code=ErrorCode.transactional_id_authorization_failed,
                    producer_id=-1, producer_epoch=-1)
    try:
        pid, epoch = await ctx.broker.transactions.init_producer_id(
            request.transactional_id,
            int(request.transaction_timeout.total_seconds() * 1000),
            getattr(request, "producer_id", -1), getattr(request, "producer_epoch", -1))
    except KafkaError as e:
        return make(cls, error_code=fenced(e.code, ctx.version, 4), producer_id=-1,
                    producer_epoch=-1)
    return make(cls, error_code=ErrorCode.none, producer_id=pid, producer_epoch=epoch)
