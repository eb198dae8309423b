"""FindCoordinator (key 10), versions 0-6.

Behaviour: for a group key (key_type 0) answers the leader of the group's partition of
`__consumer_offsets`, creating that topic on first use (offsets.topic.num.partitions, and
offsets.topic.replication.factor capped at the live brokers). For a transactional id
(key_type 1) the leader of its partition of `__transaction_state`, created the same way
(transaction.state.log.*). COORDINATOR_NOT_AVAILABLE while it has no leader;
INVALID_REQUEST for an empty key or an unknown key type.
With an authorizer: GROUP_AUTHORIZATION_FAILED (TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
without DESCRIBE on the group (transactional id).
Version notes: v4+ batches several keys in coordinator_keys.
"""

from __future__ import annotations

from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode, KafkaError
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 10
GROUP, TRANSACTION = 0, 1


async def _lookup(ctx: RequestContext, key: str, key_type: int):
    """(error, message, node id, host, port) for one key."""
    try:
        if key_type == TRANSACTION and not allowed(ctx, Op.DESCRIBE, Res.TRANSACTIONAL_ID, key):
            raise KafkaError("Transactional Id authorization failed.",
                             ErrorCode.transactional_id_authorization_failed)
        if key_type == GROUP and not allowed(ctx, Op.DESCRIBE, Res.GROUP, key):
            raise KafkaError("Group authorization failed.",
                             ErrorCode.group_authorization_failed)
        if key_type not in (GROUP, TRANSACTION):
            raise KafkaError(f"Unknown key type {key_type}", ErrorCode.invalid_request)
        if not key:
            raise KafkaError("The key must not be empty", ErrorCode.invalid_request)
        if key_type == TRANSACTION:
            node = await ctx.broker.transactions.find_coordinator(key)
        else:
            node = await ctx.broker.groups.find_coordinator(key)
        endpoint = ctx.broker.cache.endpoint(node, ctx.listener)
        if endpoint is None:
            raise KafkaError(None, ErrorCode.coordinator_not_available)
        return ErrorCode.none, None, node, endpoint.host, endpoint.port
    except KafkaError as e:
        return e.code, e.message or e.code.name.upper(), -1, "", -1


@register(API_KEY, "find_coordinator", 0, 6)
async def handle(ctx: RequestContext, request):
    cls = response_schema(API_KEY, ctx.version)
    key_type = getattr(request, "key_type", GROUP)
    if ctx.version >= 4:
        mod = response_module(API_KEY, ctx.version)
        coordinators = []
        for key in request.coordinator_keys:
            error, message, node, host, port = await _lookup(ctx, key, key_type)
            coordinators.append(make(mod.Coordinator, key=key, node_id=node, host=host,
                                     port=port, error_code=error, error_message=message))
        return make(cls, coordinators=tuple(coordinators))
    error, message, node, host, port = await _lookup(ctx, request.key, key_type)
    return make(cls, error_code=error, error_message=message, node_id=node, host=host,
                port=port)
