"""AddPartitionsToTxn (key 24), versions 0-5.

Behaviour: adds partitions to the producer's transaction (TransactionCoordinator.
add_partitions), written to `__transaction_state` before the answer. Every partition gets
the transaction's error; partitions of unknown topics get UNKNOWN_TOPIC_OR_PARTITION and
the others OPERATION_NOT_ATTEMPTED (nothing is added). Errors: INVALID_PRODUCER_ID_MAPPING,
PRODUCER_FENCED, CONCURRENT_TRANSACTIONS (a previous EndTxn is still completing),
NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, INVALID_REQUEST. With an authorizer:
TRANSACTIONAL_ID_AUTHORIZATION_FAILED without WRITE on the transactional id, and
TOPIC_AUTHORIZATION_FAILED for topics without WRITE (the others OPERATION_NOT_ATTEMPTED);
v4+ needs CLUSTER_ACTION (CLUSTER_AUTHORIZATION_FAILED).
Version notes: v0-3 are the clients' (one transaction); v4+ the brokers' batched form
(KIP-890): several transactions, each possibly verify_only, which only answers whether
each partition is already in the transaction (INVALID_TXN_STATE when not); PRODUCER_FENCED
from v2, INVALID_PRODUCER_EPOCH before. v5 (not verify_only) is what a Produce v12 leader
sends to add a partition to a Transactions V2 transaction (KIP-890 part 2).
"""

from __future__ import annotations

from strom.api.answers import fenced
from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 24


async def _one(ctx: RequestContext, txn_id: str, pid: int, epoch: int, topics,
               verify_only: bool) -> dict[tuple[str, int], int]:
    wanted = [(t.name, p) for t in topics for p in t.partitions]
    if not verify_only and ctx.version <= 3:  # the client's form: as Kafka's KafkaApis
        if not allowed(ctx, Op.WRITE, Res.TRANSACTIONAL_ID, txn_id):
            return dict.fromkeys(wanted, ErrorCode.transactional_id_authorization_failed)
        writable = {t for t, _ in wanted if allowed(ctx, Op.WRITE, Res.TOPIC, t)}
        if len(writable) < len({t for t, _ in wanted}):
            return {tp: ErrorCode.operation_not_attempted if tp[0] in writable else
                    ErrorCode.topic_authorization_failed for tp in wanted}
    unknown = {tp for tp in wanted if ctx.broker.cache.partition(*tp) is None}
    coordinator = ctx.broker.transactions
    try:
        if verify_only:
            return dict(coordinator.verify_partitions(txn_id, pid, epoch, wanted))
        if unknown:
            return {tp: ErrorCode.unknown_topic_or_partition if tp in unknown else
                    ErrorCode.operation_not_attempted for tp in wanted}
        # v5 from a Produce v12 leader: the partition joins a Transactions V2 transaction
        await coordinator.add_partitions(txn_id, pid, epoch, set(wanted),
                                         2 if ctx.version >= 5 else None)
        return dict.fromkeys(wanted, ErrorCode.none)
    except KafkaError as e:
        return dict.fromkeys(wanted, fenced(e.code, ctx.version, 2))


def _topic_results(mod, codes: dict[tuple[str, int], int]) -> tuple:
    by_topic: dict[str, list] = {}
    for (t, p), code in codes.items():
        by_topic.setdefault(t, []).append(make(
            mod.AddPartitionsToTxnPartitionResult, partition_index=p,
            partition_error_code=code))
    return tuple(make(mod.AddPartitionsToTxnTopicResult, name=t, results_by_partition=tuple(ps))
                 for t, ps in by_topic.items())


@register(API_KEY, "add_partitions_to_txn", 0, 5)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    cls = response_schema(API_KEY, ctx.version)
    if ctx.version <= 3:
        codes = await _one(ctx, request.v3_and_below_transactional_id,
                           request.v3_and_below_producer_id,
                           request.v3_and_below_producer_epoch,
                           request.v3_and_below_topics, False)
        return make(cls, results_by_topic_v3_and_below=_topic_results(mod, codes))
    if not allowed(ctx, Op.CLUSTER_ACTION, Res.CLUSTER):  # v4+: brokers only
        return make(cls, error_code=ErrorCode.cluster_authorization_failed,
                    results_by_transaction=())
    results = []
    for txn in request.transactions:
        codes = await _one(ctx, txn.transactional_id, txn.producer_id, txn.producer_epoch,
                           txn.topics, txn.verify_only)
        results.append(make(mod.AddPartitionsToTxnResult,
                            transactional_id=txn.transactional_id,
                            topic_results=_topic_results(mod, codes)))
    return make(cls, error_code=ErrorCode.none, results_by_transaction=tuple(results))
