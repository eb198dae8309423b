"""Dispatcher: one request frame in, one response (or none) out.

Two channels for errors, as in Kafka: business failures are error codes inside responses
(the handlers' job); protocol violations (a frame that does not parse, an unknown API key,
a version we do not serve) close the connection. ApiVersions at a version we do not serve
is the exception: it gets a v0 response with UNSUPPORTED_VERSION and our version ranges.
Unexpected exceptions are logged here, once, and close the connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from strom.api.api_versions import build_response as api_versions_response
from strom.api.context import BrokerServices, RequestContext
from strom.api.fetch import RawResponse
from strom.api.produce import NO_RESPONSE
from strom.api.registry import CloseConnection as HandlerClose
from strom.api.registry import load_all
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import (
    MalformedRequest,
    RequestHeader,
    api_name,
    encode_response,
    parse_request,
    peek_header,
)

log = logging.getLogger(__name__)

API_VERSIONS = 18


class CloseConnection(Exception):
    """The request was a protocol violation; the reason is logged by the connection."""


class Dispatcher:
    def __init__(self, services: BrokerServices) -> None:
        self.services = services
        self.handlers = load_all()

    async def dispatch(self, frame: bytes, client: str, client_host: str, listener: str,
                       appended: Callable[[], None] | None = None,
                       principal: str = "User:ANONYMOUS") -> bytes | RawResponse | None:
        """The response to `frame` (None: none is sent). `appended` is called by an acks=all
        Produce once its records are appended (see RequestContext.appended)."""
        try:
            api_key, version, correlation_id = peek_header(frame)
        except MalformedRequest as e:
            raise CloseConnection(str(e)) from None
        spec = self.handlers.get(api_key)
        if spec is None:
            raise CloseConnection(f"unknown API key {api_key}")
        if not spec.min_parsed <= version <= spec.max_version:
            if api_key == API_VERSIONS:
                return encode_response(correlation_id, api_versions_response(
                    0, ErrorCode.unsupported_version))
            raise CloseConnection(f"unsupported version {version} of {spec.name} "
                                  f"(served: {spec.min_parsed}-{spec.max_version})")
        try:
            header, body = parse_request(frame)
        except MalformedRequest as e:
            log.debug("Malformed frame from %s: %s", client, frame[:256].hex())
            raise CloseConnection(f"malformed request: {e}") from None
        ctx = RequestContext(header, self.services, client_host, listener, appended,
                             principal)
        try:
            response: Any = await spec.handler(ctx, body)
            if response is NO_RESPONSE:
                return None
            if isinstance(response, (RawResponse, bytes)):  # framed by the handler already
                return response
            return encode_response(correlation_id, response)
        except HandlerClose as e:
            raise CloseConnection(str(e)) from None
        except Exception:
            log.exception("Unexpected error handling %s v%d (correlation id %d) from %s",
                          api_name(api_key), version, correlation_id, client)
            raise CloseConnection("unexpected server error") from None


__all__ = ["CloseConnection", "Dispatcher", "RequestHeader"]
