"""EndTxn (key 26), versions 0-5.

Behaviour: commits or aborts the producer's transaction (TransactionCoordinator.end_txn):
answered once PrepareCommit/PrepareAbort is written to `__transaction_state`; the markers
follow. A retry of a completed EndTxn of the same kind succeeds. Errors:
INVALID_TXN_STATE (no transaction, or the other outcome already chosen),
CONCURRENT_TRANSACTIONS (still completing), INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED,
NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS. With an authorizer: WRITE on the
transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
Version notes: PRODUCER_FENCED from v2, INVALID_PRODUCER_EPOCH before. v5 is Transactions
V2 (KIP-890 part 2): the coordinator ends the transaction with the epoch bumped (a new
producer id once exhausted) and answers the producer id and epoch to go on with; a retry
carries the previous epoch and succeeds when the last transaction ended the same way.
"""

from __future__ import annotations

from strom.api.answers import fenced
from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_schema

API_KEY = 26


TXN_V2_VERSION = 5


@register(API_KEY, "end_txn", 0, 5)
async def handle(ctx: RequestContext, request):
    cls = response_schema(API_KEY, ctx.version)
    if not allowed(ctx, Op.WRITE, Res.TRANSACTIONAL_ID, request.transactional_id):
        return make(cls, error_code=ErrorCode.transactional_id_authorization_failed,
                    producer_id=-1, producer_epoch=-1)
    try:
        v2 = ctx.version >= TXN_V2_VERSION
        pid, epoch = await ctx.broker.transactions.end_txn(
            request.transactional_id, request.producer_id, request.producer_epoch,
            request.committed, v2)
    except KafkaError as e:
        return make(cls, error_code=fenced(e.code, ctx.version, 2), producer_id=-1,
                    producer_epoch=-1)
    if not v2:
        pid = epoch = -1
    return make(cls, error_code=ErrorCode.none, producer_id=pid, producer_epoch=epoch)
