"""InitProducerId (key 22), versions 0-5.

Behaviour: for an idempotent producer (transactional_id null) hands out a new producer id
with epoch 0 each time, as Kafka does; sequence state per partition then deduplicates
retried batches. Transactional producers are not served yet: TRANSACTIONAL_ID_AUTHORIZATION
_FAILED with a message (transactions are a later issue; see docs/deviations.md).
With an authorizer (as Kafka since KIP-679): an idempotent producer needs IDEMPOTENT_WRITE
on the cluster or WRITE on some topic, else CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

from strom.api.authorization import Op, Res, allowed, allowed_any
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, response_schema

API_KEY = 22


@register(API_KEY, "init_producer_id", 0, 5)
async def handle(ctx: RequestContext, request):
    cls = response_schema(API_KEY, ctx.version)
    if request.transactional_id is None and not (
            allowed(ctx, Op.IDEMPOTENT_WRITE, Res.CLUSTER)
            or allowed_any(ctx, Op.WRITE, Res.TOPIC)):
        return make(cls, error_code=ErrorCode.cluster_authorization_failed,
                    producer_id=-1, producer_epoch=-1)
    if request.transactional_id is not None:
        return make(cls, error_code=ErrorCode.transactional_id_authorization_failed,
                    producer_id=-1, producer_epoch=-1)
    pid = await ctx.broker.producer_ids.generate()
    return make(cls, error_code=ErrorCode.none, producer_id=pid, producer_epoch=0)
