"""SASL/OAUTHBEARER (RFC 7628) with Kafka's default, unsecured tokens: for development, as
Kafka's OAuthBearerUnsecuredValidatorCallbackHandler. The client's one message is

    n,[a=<authzid>],\\x01auth=Bearer <token>\\x01[key=value\\x01...]\\x01

and the token an unsigned JWS (`alg: none`): base64url(header).base64url(claims).
The principal is the `sub` claim (the JAAS option unsecuredValidatorPrincipalClaimName
names another), `exp` is required and must be in the future (give or take
unsecuredValidatorAllowableClockSkewMs), and unsecuredValidatorRequiredScope lists scopes
the `scope` claim must hold. The session lasts until `exp` (connections.max.reauth.ms may
shorten it). A token that fails is answered SASL_AUTHENTICATION_FAILED with the reason
(Kafka first sends an error challenge; clients report the same failure)."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable

from strom.security.mechanism import SaslFailed

MECHANISM = "OAUTHBEARER"
_MESSAGE = re.compile(r"n,(a=[^,]*)?,\x01(.*)\x01\x01", re.S)


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UnsecuredValidator:
    def __init__(self, options: dict[str, str], now_ms: Callable[[], float] | None = None
                 ) -> None:
        self.principal_claim = options.get("unsecuredValidatorPrincipalClaimName", "sub")
        self.scope_claim = options.get("unsecuredValidatorScopeClaimName", "scope")
        self.required_scope = options.get("unsecuredValidatorRequiredScope", "").split()
        self.skew_ms = int(options.get("unsecuredValidatorAllowableClockSkewMs", "0") or 0)
        self.now_ms = now_ms or (lambda: time.time() * 1000)

    def validate(self, token: str) -> tuple[str, int]:
        """(principal name, lifetime ms); raises SaslFailed."""
        parts = token.split(".")
        if len(parts) != 3:
            raise SaslFailed("invalid_token: not a compact JWS (3 parts)")
        try:
            header = json.loads(_b64url(parts[0]))
            claims = json.loads(_b64url(parts[1]))
        except ValueError:
            raise SaslFailed("invalid_token: header or claims are not base64url JSON") \
                from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise SaslFailed("invalid_token: header and claims must be JSON objects")
        if header.get("alg") != "none":
            raise SaslFailed("invalid_token: an unsecured token must have alg 'none'")
        name = claims.get(self.principal_claim)
        if not isinstance(name, str) or not name.strip():
            raise SaslFailed(f"invalid_token: no '{self.principal_claim}' claim")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise SaslFailed("invalid_token: the 'exp' claim is required")
        now = self.now_ms()
        if exp * 1000 + self.skew_ms <= now:
            raise SaslFailed(f"invalid_token: the token expired at {int(exp)} (s)")
        iat = claims.get("iat")
        if isinstance(iat, (int, float)) and iat * 1000 - self.skew_ms > now:
            raise SaslFailed("invalid_token: the token was issued in the future")
        scope = claims.get(self.scope_claim, [])
        scopes = scope.split() if isinstance(scope, str) else list(scope or [])
        missing = [s for s in self.required_scope if s not in scopes]
        if missing:
            raise SaslFailed(f"insufficient_scope: missing {' '.join(missing)}")
        return name, max(0, int(exp * 1000 - now))


class OAuthBearerServer:
    """`validator`: an UnsecuredValidator, or a jwks.JwksValidator for signed tokens."""

    def __init__(self, validator: UnsecuredValidator) -> None:
        self.validator = validator
        self.complete = False
        self.authorization_id = ""
        self.lifetime_ms: int | None = None

    async def evaluate(self, token: bytes) -> bytes:
        if self.complete:
            raise SaslFailed("Unexpected OAUTHBEARER message after the exchange completed")
        try:
            message = token.decode()
        except UnicodeDecodeError:
            raise SaslFailed("Invalid OAUTHBEARER message: not UTF-8") from None
        m = _MESSAGE.fullmatch(message)
        if m is None:
            raise SaslFailed("Invalid OAUTHBEARER initial client response")
        fields = dict(kv.split("=", 1) for kv in m.group(2).split("\x01") if "=" in kv)
        auth = fields.get("auth", "")
        if not auth.lower().startswith("bearer "):
            raise SaslFailed("Invalid OAUTHBEARER initial client response: no bearer token")
        name, lifetime = self.validator.validate(auth[7:].strip())
        authzid = m.group(1)[2:] if m.group(1) else ""
        if authzid and authzid != name:
            raise SaslFailed("Authentication failed: the authorization id differs from "
                             "the token's principal")
        self.authorization_id, self.lifetime_ms, self.complete = name, lifetime, True
        return b""


def unsecured_token(subject: str, lifetime_s: int = 3600, now: float | None = None) -> str:
    """An unsecured JWS as Kafka's OAuthBearerUnsecuredLoginCallbackHandler makes (for a
    broker's own connections to others, and for tests)."""
    now = time.time() if now is None else now

    def enc(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return (f"{enc({'alg': 'none'})}."
            f"{enc({'sub': subject, 'iat': int(now), 'exp': int(now + lifetime_s)})}.")


def client_message(token: str) -> bytes:
    return f"n,,\x01auth=Bearer {token}\x01\x01".encode()
