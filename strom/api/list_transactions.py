"""ListTransactions (key 66), versions 0-2.

Behaviour: the transactional ids this broker coordinates, with producer id and state,
filtered by state (unknown state names are returned in unknown_state_filters), producer
id, (v1+) duration: only transactions open for longer than duration_filter ms, and (v2+) a
regular expression on the id. COORDINATOR_LOAD_IN_PROGRESS while a partition loads.
"""

from __future__ import annotations

import re

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.coordinator.transaction_metadata import TxnState
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 66


@register(API_KEY, "list_transactions", 0, 2)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    cls = response_schema(API_KEY, ctx.version)
    states, unknown = set(), []
    for name in request.state_filters:
        state = TxnState.by_kafka_name(name)
        if state is None:
            unknown.append(name)
        else:
            states.add(state)
    pattern = getattr(request, "transactional_id_pattern", None)
    if pattern:
        try:
            re.compile(pattern)
        except re.error:
            return make(cls, error_code=ErrorCode.invalid_regular_expression,
                        unknown_state_filters=tuple(unknown), transaction_states=())
    if unknown and not states:
        return make(cls, error_code=ErrorCode.none, unknown_state_filters=tuple(unknown),
                    transaction_states=())
    try:
        listed = ctx.broker.transactions.list_transactions(
            states, set(request.producer_id_filters),
            getattr(request, "duration_filter", -1), pattern)
    except KafkaError as e:
        return make(cls, error_code=e.code, unknown_state_filters=tuple(unknown),
                    transaction_states=())
    return make(cls, error_code=ErrorCode.none, unknown_state_filters=tuple(unknown),
                transaction_states=tuple(make(
                    mod.TransactionState, transactional_id=t.transactional_id,
                    producer_id=t.producer_id, transaction_state=t.state) for t in listed
                    # with an authorizer, only the ids the principal may DESCRIBE
                    if allowed(ctx, Op.DESCRIBE, Res.TRANSACTIONAL_ID, t.transactional_id)))
