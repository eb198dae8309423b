"""SaslHandshake (17) v0-1 and SaslAuthenticate (36) v0-2, when they reach the dispatcher.

On a SASL listener the connection's authenticator (strom.server.authenticator) answers both
before anything is dispatched, so a handler here sees only what Kafka's KafkaApis sees: a
request on a listener without SASL, or out of turn. Both are answered ILLEGAL_SASL_STATE,
as Kafka does. Registering them here also puts them in ApiVersions.
"""

from __future__ import annotations

from datetime import timedelta

from strom.api.context import RequestContext
from strom.api.registry import register
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, response_schema


@register(17, "sasl_handshake", 0, 1)
async def handle_handshake(ctx: RequestContext, request) -> object:
    return make(response_schema(17, ctx.version), error_code=ErrorCode.illegal_sasl_state,
                mechanisms=())


@register(36, "sasl_authenticate", 0, 2)
async def handle_authenticate(ctx: RequestContext, request) -> object:
    return make(response_schema(36, ctx.version), error_code=ErrorCode.illegal_sasl_state,
                error_message="Unexpected SASL request: this listener does not use SASL, "
                              "or the client is authenticated already",
                auth_bytes=b"", session_lifetime=timedelta(0))
