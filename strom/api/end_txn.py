"""EndTxn (key 26), versions 0-4.

Behaviour: commits or aborts the producer's transaction (TransactionCoordinator.end_txn):
answered once PrepareCommit/PrepareAbort is written to `__transaction_state`; the markers
follow. A retry of a completed EndTxn of the same kind succeeds. Errors:
INVALID_TXN_STATE (no transaction, or the other outcome already chosen),
CONCURRENT_TRANSACTIONS (still completing), INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED,
NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS. With an authorizer: WRITE on the
transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
Version notes: PRODUCER_FENCED from v2, INVALID_PRODUCER_EPOCH before. v5 (Transactions
V2, KIP-890 part 2) is not served: ApiVersions stops at v4, so clients use V1.
"""

from __future__ import annotations

from strom.api.answers import fenced
from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_schema

API_KEY = 26


@register(API_KEY, "end_txn", 0, 4)
async def handle(ctx: RequestContext, request):
    cls = response_schema(API_KEY, ctx.version)
    if not allowed(ctx, Op.WRITE, Res.TRANSACTIONAL_ID, request.transactional_id):
        return make(cls, error_code=ErrorCode.transactional_id_authorization_failed,
                    producer_id=-1, producer_epoch=-1)
    try:
        await ctx.broker.transactions.end_txn(request.transactional_id, request.producer_id,
                                              request.producer_epoch, request.committed)
    except KafkaError as e:
        return make(cls, error_code=fenced(e.code, ctx.version, 2), producer_id=-1,
                    producer_epoch=-1)
    return make(cls, error_code=ErrorCode.none, producer_id=-1, producer_epoch=-1)
