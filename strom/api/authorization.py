"""The checks handlers make, as Kafka's AuthHelper: one call per (operation, resource).

Without an authorizer (`authorizer.class.name` unset) everything is allowed and
authorized_operations hold every operation the resource type supports, as in Kafka.
"""

from __future__ import annotations

from strom.api.context import RequestContext
from strom.protocol.errors import ErrorCode, KafkaError
from strom.security.acls import CLUSTER_NAME, SUPPORTED_OPERATIONS, AclOperation, ResourceType

# INT32_MIN: authorized_operations not asked for
NOT_ASKED = -(1 << 31)

Op = AclOperation
Res = ResourceType

_DENIED = {
    Res.TOPIC: ErrorCode.topic_authorization_failed,
    Res.GROUP: ErrorCode.group_authorization_failed,
    Res.CLUSTER: ErrorCode.cluster_authorization_failed,
    Res.TRANSACTIONAL_ID: ErrorCode.transactional_id_authorization_failed,
    Res.DELEGATION_TOKEN: ErrorCode.delegation_token_authorization_failed,
}


def allowed(ctx: RequestContext, op: AclOperation, rtype: ResourceType,
            name: str = CLUSTER_NAME) -> bool:
    authorizer = ctx.broker.authorizer
    return authorizer is None or authorizer.authorize(ctx.principal, ctx.client_host, op,
                                                      rtype, name)


def allowed_any(ctx: RequestContext, op: AclOperation, rtype: ResourceType) -> bool:
    """Some resource of the type allows `op` (Kafka's authorizeByResourceType)."""
    authorizer = ctx.broker.authorizer
    return authorizer is None or authorizer.authorize_by_resource_type(
        ctx.principal, ctx.client_host, op, rtype)


def denied_code(rtype: ResourceType) -> ErrorCode:
    return _DENIED[rtype]


def check(ctx: RequestContext, op: AclOperation, rtype: ResourceType,
          name: str = CLUSTER_NAME) -> None:
    """Raise Kafka's *_AUTHORIZATION_FAILED for the resource type unless allowed."""
    if not allowed(ctx, op, rtype, name):
        what = "cluster" if rtype == Res.CLUSTER else f"{rtype.name.lower()} {name!r}"
        raise KafkaError(f"Not authorized to {op.name} {what}", _DENIED[rtype])


def operations(ctx: RequestContext, rtype: ResourceType, name: str = CLUSTER_NAME) -> int:
    """The authorized_operations bit field of a resource for this request's principal."""
    authorizer = ctx.broker.authorizer
    if authorizer is None:
        bits = 0
        for op in SUPPORTED_OPERATIONS[rtype]:
            bits |= 1 << op
        return bits
    return authorizer.authorized_operations(ctx.principal, ctx.client_host, rtype, name)
