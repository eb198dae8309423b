"""OAUTHBEARER tokens signed by an identity provider, checked against its JSON Web Key Set,
as Kafka's OAuthBearerValidatorCallbackHandler (KIP-768) does, with `joserfc`.

Configs (Kafka's): `sasl.oauthbearer.jwks.endpoint.url` (a `file:` URL, or http(s) fetched
once at start-up), `sasl.oauthbearer.expected.audience` (the `aud` claim must hold one of
them, when set), `sasl.oauthbearer.expected.issuer` (`iss`, when set),
`sasl.oauthbearer.sub.claim.name` (the principal, default `sub`),
`sasl.oauthbearer.scope.claim.name`, `sasl.oauthbearer.clock.skew.seconds` (30). `exp` is
required. Only asymmetric signatures are accepted (a JWKS publishes public keys)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from strom.config import ConfigError
from strom.security.mechanism import SaslFailed

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512", "EdDSA"]


def load_key_set(url: str, timeout_s: float = 10.0) -> Any:
    from joserfc.jwk import KeySet

    if not url.startswith(("file:", "http:", "https:")):
        raise ConfigError(f"sasl.oauthbearer.jwks.endpoint.url must be a file: or http(s): "
                          f"URL, got {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as f:  # noqa: S310 - checked
            data = json.loads(f.read())
        return KeySet.import_key_set(data)
    except (OSError, ValueError) as e:
        raise ConfigError(f"Cannot load the JWKS from {url}: {e}") from None


class JwksValidator:
    def __init__(self, get: Callable[[str], Any], now: Callable[[], float] | None = None
                 ) -> None:
        self.key_set = load_key_set(get("sasl.oauthbearer.jwks.endpoint.url"))
        self.audience = get("sasl.oauthbearer.expected.audience") or []
        self.issuer = get("sasl.oauthbearer.expected.issuer")
        self.sub_claim = get("sasl.oauthbearer.sub.claim.name")
        self.skew_s = get("sasl.oauthbearer.clock.skew.seconds")
        self.now = now or time.time

    def validate(self, token: str) -> tuple[str, int]:
        """(principal name, lifetime ms); raises SaslFailed."""
        from joserfc import jwt
        from joserfc.errors import JoseError

        try:
            claims = jwt.decode(token, self.key_set, algorithms=ALGORITHMS).claims
            options: dict[str, Any] = {"exp": {"essential": True}}
            if self.issuer:
                options["iss"] = {"essential": True, "value": self.issuer}
            if self.audience:
                options["aud"] = {"essential": True, "values": list(self.audience)}
            jwt.JWTClaimsRegistry(now=int(self.now()), leeway=self.skew_s,
                                  **options).validate(claims)
        except (JoseError, ValueError) as e:
            raise SaslFailed(f"invalid_token: {e}") from None
        name = claims.get(self.sub_claim)
        if not isinstance(name, str) or not name.strip():
            raise SaslFailed(f"invalid_token: no '{self.sub_claim}' claim")
        return name, max(0, int((claims["exp"] - self.now()) * 1000))
