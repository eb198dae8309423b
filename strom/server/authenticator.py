"""The SASL authentication of one connection on a SASL_PLAINTEXT or SASL_SSL listener, as
Kafka's SaslServerAuthenticator runs it, in front of the dispatcher.

States (`SaslState`) and their moves:

    HANDSHAKE      ApiVersions is served (stays); SaslHandshake v1 naming an enabled
                   mechanism -> AUTHENTICATE; an unknown mechanism is answered
                   UNSUPPORTED_SASL_MECHANISM with the enabled list -> FAILED
    AUTHENTICATE   each SaslAuthenticate token goes to the mechanism; once it completes
                   -> COMPLETE; a bad token is answered SASL_AUTHENTICATION_FAILED with
                   the reason -> FAILED
    COMPLETE       every request goes to the dispatcher with the principal; a SaslHandshake
                   starts a re-authentication (KIP-368) -> AUTHENTICATE, which must end
                   with the same principal and mechanism
    FAILED         the connection closes once the answer is written

After a SaslHandshake v0 (older clients; librdkafka before 1.x and kafka-python), the
AUTHENTICATE state reads raw SASL tokens, each a size-prefixed frame that is not a Kafka
request, and answers each with a size-prefixed challenge; a failure closes the connection
without an answer, as Kafka. Any other request before COMPLETE closes the connection
after one log line: an unauthenticated request is never served. Until COMPLETE, a frame larger than sasl.server.max.receive.size closes the
connection. With connections.max.reauth.ms (or a token's expiry, for OAUTHBEARER), the
session has a lifetime, told to the client in SaslAuthenticate v1+; a request after it ends
that is not a re-authentication closes the connection.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import timedelta

from strom.protocol.errors import ErrorCode
from strom.protocol.messages import (
    MalformedRequest,
    encode_response,
    make,
    parse_request,
    peek_header,
    response_schema,
)
from strom.security.listener import ListenerSecurity
from strom.security.mechanism import SaslFailed, SaslServer

log = logging.getLogger(__name__)

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
MAX_SASL_AUTHENTICATE_VERSION = 2


class SaslState(enum.Enum):
    HANDSHAKE = "HANDSHAKE"
    AUTHENTICATE = "AUTHENTICATE"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


_MOVES = {
    SaslState.HANDSHAKE: {SaslState.AUTHENTICATE, SaslState.FAILED},
    SaslState.AUTHENTICATE: {SaslState.COMPLETE, SaslState.FAILED},
    SaslState.COMPLETE: {SaslState.AUTHENTICATE, SaslState.FAILED},
    SaslState.FAILED: set(),
}


class AuthenticationClose(Exception):
    """The connection closes (the reason is logged by the connection)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A response written by the authenticator; `close`: then the connection closes."""

    response: bytes
    close: bool = False


class Authenticator:
    """Owned by one connection (its serving task)."""

    def __init__(self, security: ListenerSecurity, client: str,
                 now_ms) -> None:
        self.security = security
        self.client = client
        self.now_ms = now_ms  # a Clock's time in ms
        self.state = SaslState.HANDSHAKE
        self.principal: str | None = None  # "User:<name>" once authenticated
        self.mechanism: str | None = None
        self.expires_at_ms: float | None = None
        self._server: SaslServer | None = None
        self._reauthenticating = False
        self._raw_tokens = False  # after SaslHandshake v0

    def _move(self, to: SaslState) -> None:
        if to not in _MOVES[self.state]:
            raise AssertionError(f"SASL state {self.state.name} cannot move to {to.name}")
        self.state = to

    @property
    def authenticated(self) -> bool:
        return self.state is SaslState.COMPLETE

    @property
    def max_frame_bytes(self) -> int | None:
        """The largest frame read while not authenticated (None: the broker's own)."""
        return None if self.authenticated else self.security.max_receive_size

    async def intercept(self, frame: bytes | bytearray) -> Answer | None:
        """The authenticator's answer to a frame, or None when the dispatcher serves it.
        Raises AuthenticationClose."""
        if self.state is SaslState.AUTHENTICATE and self._raw_tokens:
            return await self._raw_token(bytes(frame))
        try:
            api_key, version, _ = peek_header(frame)
        except MalformedRequest as e:
            raise AuthenticationClose(str(e)) from None
        if self.state is SaslState.COMPLETE:
            if api_key == SASL_HANDSHAKE:
                return self._handshake(frame, reauthentication=True)
            if self.expires_at_ms is not None and self.now_ms() >= self.expires_at_ms:
                raise AuthenticationClose(
                    f"the SASL session of {self.principal} expired and the client did not "
                    "re-authenticate (connections.max.reauth.ms)")
            return None
        if self.state is SaslState.HANDSHAKE:
            if api_key == API_VERSIONS:
                return None
            if api_key == SASL_HANDSHAKE:
                return self._handshake(frame, reauthentication=False)
        elif self.state is SaslState.AUTHENTICATE and api_key == SASL_AUTHENTICATE:
            return await self._authenticate(frame, version)
        raise AuthenticationClose(
            f"unexpected request (API key {api_key}) in SASL state {self.state.name}: "
            "a client must authenticate before any other request")

    def _handshake(self, frame: bytes | bytearray, reauthentication: bool) -> Answer:
        header, body = _parse(frame)
        if reauthentication and header.api_version < 1:
            raise AuthenticationClose("re-authentication needs SaslHandshake v1")
        enabled = tuple(self.security.mechanisms)
        factory = self.security.mechanisms.get(body.mechanism)
        if reauthentication:
            if factory is not None and body.mechanism != self.mechanism:
                factory = None  # KIP-368: the mechanism cannot change
            self._reauthenticating = True
        cls = response_schema(SASL_HANDSHAKE, header.api_version)
        if factory is None:
            log.info("Closing connection from %s: SASL mechanism %r is not enabled "
                     "(enabled: %s)", self.client, body.mechanism, ", ".join(enabled))
            self._move(SaslState.FAILED)
            return Answer(encode_response(header.correlation_id, make(
                cls, error_code=ErrorCode.unsupported_sasl_mechanism,
                mechanisms=enabled)), close=True)
        self._server = factory()
        self.mechanism = body.mechanism
        self._raw_tokens = header.api_version == 0
        self._move(SaslState.AUTHENTICATE)
        return Answer(encode_response(header.correlation_id, make(
            cls, error_code=ErrorCode.none, mechanisms=enabled)))

    async def _authenticate(self, frame: bytes | bytearray, version: int) -> Answer:
        if version > MAX_SASL_AUTHENTICATE_VERSION:
            raise AuthenticationClose(f"unsupported version {version} of SaslAuthenticate")
        header, body = _parse(frame)
        cls = response_schema(SASL_AUTHENTICATE, header.api_version)
        server = self._server
        assert server is not None
        try:
            challenge = await server.evaluate(body.auth_bytes)
            principal = f"User:{server.authorization_id}" if server.complete else None
            if principal is not None and self._reauthenticating and \
                    principal != self.principal:
                raise SaslFailed(f"Cannot change principals during re-authentication from "
                                 f"{self.principal}: {principal}")
        except SaslFailed as e:
            log.info("Failed authentication with %s (%s %s)", self.client, self.mechanism, e)
            self._move(SaslState.FAILED)
            return Answer(encode_response(header.correlation_id, make(
                cls, error_code=ErrorCode.sasl_authentication_failed, error_message=str(e),
                auth_bytes=b"", session_lifetime=timedelta(0))), close=True)
        lifetime_ms = 0
        if server.complete:
            self.principal = principal
            lifetime_ms = self._session_lifetime_ms(server, header.api_version)
            self.expires_at_ms = self.now_ms() + lifetime_ms if lifetime_ms else None
            self._reauthenticating = False
            self._move(SaslState.COMPLETE)
            log.debug("%s authenticated %s with %s", self.client, principal, self.mechanism)
        return Answer(encode_response(header.correlation_id, make(
            cls, error_code=ErrorCode.none, error_message=None, auth_bytes=challenge,
            session_lifetime=timedelta(milliseconds=lifetime_ms))))

    async def _raw_token(self, token: bytes) -> Answer:
        server = self._server
        assert server is not None
        try:
            challenge = await server.evaluate(token)
        except SaslFailed as e:
            self._move(SaslState.FAILED)
            raise AuthenticationClose(f"failed authentication ({self.mechanism} {e})") \
                from None
        if server.complete:
            self.principal = f"User:{server.authorization_id}"
            self._move(SaslState.COMPLETE)
        return Answer(len(challenge).to_bytes(4, "big") + challenge)

    def _session_lifetime_ms(self, server: SaslServer, version: int) -> int:
        """As Kafka: the shorter of connections.max.reauth.ms and the credential's own
        life; 0 (none) for a client that cannot re-authenticate (SaslAuthenticate v0)."""
        limits = [x for x in (self.security.reauth_ms, server.lifetime_ms) if x]
        if not limits or version < 1:
            return 0
        return max(1, min(limits))


def _parse(frame: bytes | bytearray):
    try:
        return parse_request(frame)
    except MalformedRequest as e:
        raise AuthenticationClose(f"malformed request: {e}") from None
