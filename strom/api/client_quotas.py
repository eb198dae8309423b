"""DescribeClientQuotas (key 48) and AlterClientQuotas (key 49), versions 0-1.

Behaviour: as Kafka's, over strom.security.quotas. Entities are `user` and `client-id`
(a null name is the default entity). DescribeClientQuotas filters by components (match
type 0 exact name, 1 the default, 2 any specified name; `strict`: only entities with
exactly those types). AlterClientQuotas sets or removes (remove=true) producer_byte_rate,
consumer_byte_rate, request_percentage and controller_mutation_rate, honouring
validate_only.
Errors: INVALID_REQUEST with Kafka's message for an unknown or repeated entity type, an
empty entity, an unknown key, a value that is not positive (or not whole for the byte
rates), a bad match type; CLUSTER_AUTHORIZATION_FAILED without DESCRIBE_CONFIGS (describe)
or ALTER_CONFIGS (alter) on the cluster.
Version notes: v1 is flexible.
"""

from __future__ import annotations

from strom.api.answers import request_error
from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.cluster.store import StoreError
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, response_module, response_schema
from strom.security.quotas import CLIENT_ID, DEFAULT, USER, QuotaError

DESCRIBE, ALTER = 48, 49


@register(DESCRIBE, "describe_client_quotas", 0, 1)
async def describe(ctx: RequestContext, request):
    mod = response_module(DESCRIBE, ctx.version)
    cls = response_schema(DESCRIBE, ctx.version)
    if not allowed(ctx, Op.DESCRIBE_CONFIGS, Res.CLUSTER):
        return make(cls, error_code=ErrorCode.cluster_authorization_failed,
                    error_message="Cluster authorization failed.", entries=None)
    quotas = ctx.broker.quotas
    assert quotas is not None
    try:
        found = quotas.describe([(c.entity_type, c.match_type, c.match)
                                 for c in request.components], request.strict)
    except QuotaError as e:
        return make(cls, error_code=ErrorCode.invalid_request, error_message=str(e),
                    entries=None)
    entries = []
    for (user, client), values in found:
        entity = []
        if user is not None:
            entity.append(make(mod.EntityData, entity_type=USER,
                               entity_name=None if user == DEFAULT else user))
        if client is not None:
            entity.append(make(mod.EntityData, entity_type=CLIENT_ID,
                               entity_name=None if client == DEFAULT else client))
        entries.append(make(mod.EntryData, entity=tuple(entity), values=tuple(
            make(mod.ValueData, key=k, value=v) for k, v in sorted(values.items()))))
    return make(cls, error_code=ErrorCode.none, error_message=None, entries=tuple(entries))


def _entity(data) -> tuple[str | None, str | None]:
    user = client = None
    seen = set()
    for e in data:
        if e.entity_type in seen:
            raise QuotaError(f"Duplicate {e.entity_type} entity type in the entity")
        seen.add(e.entity_type)
        name = DEFAULT if e.entity_name is None else e.entity_name
        if e.entity_type == USER:
            user = name
        elif e.entity_type == CLIENT_ID:
            client = name
        else:
            raise QuotaError(f"Unhandled client quota entity type: {e.entity_type}")
        if e.entity_name is not None and not e.entity_name:
            raise QuotaError(f"Empty {e.entity_type} not supported")
    if user is None and client is None:
        raise QuotaError("Invalid empty client quota entity")
    return user, client


@register(ALTER, "alter_client_quotas", 0, 1)
async def alter(ctx: RequestContext, request):
    mod = response_module(ALTER, ctx.version)
    permitted = allowed(ctx, Op.ALTER_CONFIGS, Res.CLUSTER)
    quotas = ctx.broker.quotas
    assert quotas is not None
    results = []
    for entry in request.entries:
        code, message = ErrorCode.none, None
        try:
            if not permitted:
                code, message = ErrorCode.cluster_authorization_failed, \
                    "Cluster authorization failed."
            else:
                entity = _entity(entry.entity)
                await quotas.alter(entity, [(op.key, None if op.remove else op.value)
                                            for op in entry.ops], request.validate_only)
        except QuotaError as e:
            code, message = ErrorCode.invalid_request, str(e)
        except StoreError as exc:
            e = request_error(exc)
            code, message = e.code, e.message
        results.append(make(mod.EntryData, error_code=code, error_message=message,
                            entity=tuple(make(mod.EntityData, entity_type=e.entity_type,
                                              entity_name=e.entity_name)
                                         for e in entry.entity)))
    return make(response_schema(ALTER, ctx.version), entries=tuple(results))
