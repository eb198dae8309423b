"""SASL/PLAIN (RFC 4616): one token, `authzid NUL username NUL password`, checked against
the `user_<name>="<password>"` options of the listener's JAAS config, as Kafka's
PlainServerCallbackHandler. Use it over TLS only: the password travels as it is."""

from __future__ import annotations

import hmac

from strom.security.mechanism import SaslFailed

MECHANISM = "PLAIN"


class PlainServer:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.complete = False
        self.authorization_id = ""
        self.lifetime_ms: int | None = None

    async def evaluate(self, token: bytes) -> bytes:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise SaslFailed("Invalid SASL/PLAIN response: expected 3 tokens")
        try:
            authzid, user, password = (p.decode() for p in parts)
        except UnicodeDecodeError:
            raise SaslFailed("Invalid SASL/PLAIN response: not UTF-8") from None
        if not user:
            raise SaslFailed("Authentication failed: username not specified")
        if not password:
            raise SaslFailed("Authentication failed: password not specified")
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise SaslFailed("Authentication failed: Invalid username or password")
        if authzid and authzid != user:
            raise SaslFailed("Authentication failed: Client requested an authorization id "
                             "that is different from username")
        self.authorization_id = user
        self.complete = True
        return b""


def users_from_jaas(options: dict[str, str]) -> dict[str, str]:
    return {k[len("user_"):]: v for k, v in options.items() if k.startswith("user_")}


def client_token(user: str, password: str) -> bytes:
    return b"\0" + user.encode() + b"\0" + password.encode()
