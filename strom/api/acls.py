"""DescribeAcls (key 29), CreateAcls (key 30), DeleteAcls (key 31), versions 1-3.

Behaviour: as Kafka's KafkaApis and its authorizer. Without an authorizer every answer is
SECURITY_DISABLED ("No Authorizer is configured"). DescribeAcls needs DESCRIBE on the
cluster, the other two ALTER (CLUSTER_AUTHORIZATION_FAILED). A creation is refused with
INVALID_REQUEST and Kafka's message when an element is UNKNOWN or ANY, the pattern type is
not LITERAL or PREFIXED, the resource name is empty, a CLUSTER resource is not named
`kafka-cluster`, or the principal is not `<type>:<name>`; the other creations of the request
still happen. A DescribeAcls or DeleteAcls filter with an UNKNOWN element is INVALID_REQUEST.
A DeleteAcls filter reports every binding it deleted.
Version notes: v2+ flexible; v1+ pattern types (v0 is not served, as Kafka 4).
"""

from __future__ import annotations

from strom.api.answers import request_error
from strom.api.authorization import Op, Res, allowed
from strom.api.context import RequestContext
from strom.api.registry import register
from strom.cluster.store import StoreError
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, response_module, response_schema
from strom.security.acls import (
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    PatternType,
    PermissionType,
    ResourcePattern,
    ResourceType,
    binding_problem,
    enum_of,
)

DESCRIBE_ACLS, CREATE_ACLS, DELETE_ACLS = 29, 30, 31
NO_AUTHORIZER = "No Authorizer is configured."


def _filter(f) -> AclBindingFilter:
    return AclBindingFilter(
        enum_of(ResourceType, f.resource_type_filter), f.resource_name_filter,
        enum_of(PatternType, f.pattern_type_filter), f.principal_filter, f.host_filter,
        enum_of(AclOperation, f.operation), enum_of(PermissionType, f.permission_type))


def _refusal(ctx: RequestContext, op: AclOperation) -> tuple[ErrorCode, str] | None:
    if ctx.broker.authorizer is None:
        return ErrorCode.security_disabled, NO_AUTHORIZER
    if not allowed(ctx, op, Res.CLUSTER):
        return ErrorCode.cluster_authorization_failed, "Cluster authorization failed."
    return None


@register(DESCRIBE_ACLS, "describe_acls", 1, 3)
async def describe(ctx: RequestContext, request):
    mod = response_module(DESCRIBE_ACLS, ctx.version)
    cls = response_schema(DESCRIBE_ACLS, ctx.version)
    refusal = _refusal(ctx, Op.DESCRIBE)
    flt = _filter(request)
    if refusal is None and (problem := flt.problem()) is not None:
        refusal = ErrorCode.invalid_request, problem
    if refusal is not None:
        return make(cls, error_code=refusal[0], error_message=refusal[1], resources=())
    assert ctx.broker.authorizer is not None
    grouped: dict[ResourcePattern, list[AccessControlEntry]] = {}
    for b in ctx.broker.authorizer.describe(flt):
        grouped.setdefault(b.pattern, []).append(b.entry)
    resources = tuple(make(
        mod.DescribeAclsResource, resource_type=p.resource_type, resource_name=p.name,
        pattern_type=p.pattern_type, acls=tuple(make(
            mod.AclDescription, principal=e.principal, host=e.host, operation=e.operation,
            permission_type=e.permission) for e in entries))
        for p, entries in grouped.items())
    return make(cls, error_code=ErrorCode.none, error_message=None, resources=resources)


@register(CREATE_ACLS, "create_acls", 1, 3)
async def create(ctx: RequestContext, request):
    mod = response_module(CREATE_ACLS, ctx.version)
    refusal = _refusal(ctx, Op.ALTER)
    results: list[tuple[ErrorCode, str | None]] = []
    valid: list[AclBinding] = []
    for c in request.creations:
        if refusal is not None:
            results.append(refusal)
            continue
        binding = AclBinding(
            ResourcePattern(enum_of(ResourceType, c.resource_type), c.resource_name,
                            enum_of(PatternType, c.resource_pattern_type)),
            AccessControlEntry(c.principal, c.host, enum_of(AclOperation, c.operation),
                               enum_of(PermissionType, c.permission_type)))
        problem = binding_problem(binding)
        if problem is not None:
            results.append((ErrorCode.invalid_request, problem))
        else:
            valid.append(binding)
            results.append((ErrorCode.none, None))
    if valid:
        assert ctx.broker.authorizer is not None
        try:
            await ctx.broker.authorizer.create(valid)
        except StoreError as exc:
            e = request_error(exc)
            results = [(e.code, e.message) if code == ErrorCode.none else (code, message)
                       for code, message in results]
    return make(response_schema(CREATE_ACLS, ctx.version), results=tuple(
        make(mod.AclCreationResult, error_code=code, error_message=message)
        for code, message in results))


@register(DELETE_ACLS, "delete_acls", 1, 3)
async def delete(ctx: RequestContext, request):
    mod = response_module(DELETE_ACLS, ctx.version)
    refusal = _refusal(ctx, Op.ALTER)
    filters = [_filter(f) for f in request.filters]
    answers: list[tuple[ErrorCode, str | None, list[AclBinding]]] = []
    good: list[AclBindingFilter] = []
    for flt in filters:
        problem = flt.problem()
        if refusal is not None:
            answers.append((refusal[0], refusal[1], []))
        elif problem is not None:
            answers.append((ErrorCode.invalid_request, problem, []))
        else:
            good.append(flt)
            answers.append((ErrorCode.none, None, []))
    if good:
        assert ctx.broker.authorizer is not None
        try:
            deleted = iter(await ctx.broker.authorizer.delete(good))
            answers = [(code, message, next(deleted) if code == ErrorCode.none else [])
                       for code, message, _ in answers]
        except StoreError as exc:
            e = request_error(exc)
            answers = [(e.code, e.message, []) if code == ErrorCode.none else
                       (code, message, bindings) for code, message, bindings in answers]
    return make(response_schema(DELETE_ACLS, ctx.version), filter_results=tuple(make(
        mod.DeleteAclsFilterResult, error_code=code, error_message=message,
        matching_acls=tuple(make(
            mod.DeleteAclsMatchingAcl, error_code=ErrorCode.none, error_message=None,
            resource_type=b.pattern.resource_type, resource_name=b.pattern.name,
            pattern_type=b.pattern.pattern_type, principal=b.entry.principal,
            host=b.entry.host, operation=b.entry.operation, permission_type=b.entry.permission)
            for b in bindings))
        for code, message, bindings in answers))
