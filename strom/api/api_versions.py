"""ApiVersions (key 18), versions 0-4.

Behaviour: lists every registered API with the versions it serves. Always answered with
response header v0 (kio's schema says so). A request at a version above 4 is answered by
the dispatcher with a v0 body: UNSUPPORTED_VERSION plus the full list, as Kafka does, so
the client can retry at a version it shares with us.
Version notes: v3+ carries client software name/version (logged at debug); features and
their epoch are left at their defaults, so no tagged fields are sent (librdkafka 2.0.2
cannot skip them).
"""

from __future__ import annotations

from strom.api.context import RequestContext
from strom.api.registry import HANDLERS, register
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, response_module, response_schema

API_KEY = 18


def build_response(version: int, error: ErrorCode = ErrorCode.none):
    mod = response_module(API_KEY, version)
    keys = tuple(make(mod.ApiVersion, api_key=s.api_key, min_version=s.min_version,
                      max_version=s.max_version)
                 for s in sorted(HANDLERS.values(), key=lambda s: s.api_key))
    return make(response_schema(API_KEY, version), error_code=error, api_keys=keys)


@register(API_KEY, "api_versions", 0, 4)
async def handle(ctx: RequestContext, request):
    return build_response(ctx.version)
