"""DescribeCluster (key 60), versions 0-1.

Behaviour: cluster id, controller id and every live broker with the endpoint of the
listener the client came through. endpoint_type 2 (controllers, v1) is answered with
UNSUPPORTED_ENDPOINT_TYPE as a broker does. Authorized operations are INT32_MIN unless asked.
"""

from __future__ import annotations

from strom.api.authorization import NOT_ASKED, Res, operations
from strom.api.context import RequestContext
from strom.api.metadata import live_brokers
from strom.api.registry import register
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 60


@register(API_KEY, "describe_cluster", 0, 1)
async def handle(ctx: RequestContext, request):
    mod = response_module(API_KEY, ctx.version)
    cls = response_schema(API_KEY, ctx.version)
    cache = ctx.broker.cache
    if getattr(request, "endpoint_type", 1) != 1:
        return make(cls, error_code=ErrorCode.unsupported_endpoint_type,
                    error_message="The broker does not list controllers", cluster_id="",
                    brokers=())
    brokers = tuple(make(mod.DescribeClusterBroker, broker_id=i, host=h, port=p, rack=r)
                    for i, h, p, r in live_brokers(ctx))
    ops = operations(ctx, Res.CLUSTER) if request.include_cluster_authorized_operations \
        else NOT_ASKED
    return make(cls, error_code=ErrorCode.none, cluster_id=cache.cluster_id or "",
                controller_id=cache.controller_id, brokers=brokers,
                cluster_authorized_operations=ops)
