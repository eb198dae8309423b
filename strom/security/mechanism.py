"""What the server side of every SASL mechanism is to the authenticator."""

from __future__ import annotations

from typing import Protocol


class SaslFailed(Exception):
    """Authentication failed; the message goes to the client (SASL_AUTHENTICATION_FAILED)."""


class SaslServer(Protocol):
    """One authentication exchange on one connection. `evaluate` takes each client token
    and returns the server's answer; once `complete`, `authorization_id` is the user name
    and `lifetime_ms` the credential's remaining life (None: unbounded)."""

    complete: bool
    authorization_id: str
    lifetime_ms: int | None

    async def evaluate(self, token: bytes) -> bytes: ...
