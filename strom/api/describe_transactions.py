"""DescribeTransactions (key 65), version 0.

Behaviour: the state, timeout, start time, producer id and epoch and partitions of each
transactional id this broker coordinates. Errors per id: TRANSACTIONAL_ID_NOT_FOUND,
NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS. A transaction not started has start time
0 where Kafka sends -1 (kio cannot read a negative timestamp; see docs/deviations.md).
"""

from __future__ import annotations

import datetime

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 65
_EPOCH = datetime.datetime.fromtimestamp(0, datetime.UTC)


@register(API_KEY, "describe_transactions", 0, 0)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    out = []
    for txn_id in request.transactional_ids:
        try:
            if not allowed(ctx, Op.DESCRIBE, Res.TRANSACTIONAL_ID, txn_id):
                raise KafkaError(None, ErrorCode.transactional_id_authorization_failed)
            txn = ctx.broker.transactions.describe(txn_id)
        except KafkaError as e:
            out.append(make(mod.TransactionState, error_code=e.code, transactional_id=txn_id,
                            transaction_state="", transaction_timeout=datetime.timedelta(0),
                            transaction_start_time=_EPOCH,
                            producer_id=-1, producer_epoch=-1, topics=()))
            continue
        by_topic: dict[str, list[int]] = {}
        for t, p in sorted(txn.partitions):
            by_topic.setdefault(t, []).append(p)
        out.append(make(
            mod.TransactionState, error_code=ErrorCode.none, transactional_id=txn_id,
            transaction_state=txn.state.kafka_name,
            transaction_timeout=datetime.timedelta(milliseconds=txn.timeout_ms),
            transaction_start_time=_EPOCH + datetime.timedelta(
                milliseconds=max(txn.start_ms, 0)),
            producer_id=txn.producer_id, producer_epoch=txn.producer_epoch,
            topics=tuple(make(mod.TopicData, topic=t, partitions=tuple(ps))
                         for t, ps in by_topic.items())))
    return make(response_schema(API_KEY, ctx.version), transaction_states=tuple(out))
