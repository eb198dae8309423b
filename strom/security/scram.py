"""SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server and client side.

The exchange, as Kafka's ScramSaslServer runs it:

    client-first   n,[a=authzid],n=<user>,r=<client nonce>[,extensions]
    server-first   r=<client nonce><server nonce>,s=<base64 salt>,i=<iterations>
    client-final   c=biws,r=<nonce>,p=<base64 proof>
    server-final   v=<base64 server signature>

The server keeps only the salted credential (`ScramCredential`: salt, StoredKey, ServerKey,
iterations), never the password. User names escape ',' and '=' as '=2C' and '=3D'."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from strom.security.mechanism import SaslFailed

HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MIN_ITERATIONS = 4096  # Kafka's ScramMechanism minimum for both
MAX_ITERATIONS = 16384  # AlterUserScramCredentials refuses more


@dataclass(frozen=True, slots=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def to_text(self) -> str:
        """Kafka's ScramCredentialUtils form, as stored in /config/users/<user>."""
        b64 = base64.b64encode
        return (f"salt={b64(self.salt).decode()},stored_key={b64(self.stored_key).decode()},"
                f"server_key={b64(self.server_key).decode()},iterations={self.iterations}")

    @classmethod
    def from_text(cls, text: str) -> ScramCredential:
        fields = dict(item.split("=", 1) for item in text.split(",") if "=" in item)
        try:
            return cls(base64.b64decode(fields["salt"]), base64.b64decode(fields["stored_key"]),
                       base64.b64decode(fields["server_key"]), int(fields["iterations"]))
        except (KeyError, ValueError) as e:
            raise ValueError(f"invalid SCRAM credential: {e}") from None


def _hmac(algorithm: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, algorithm).digest()


def salted_password(algorithm: str, password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(algorithm, password.encode(), salt, iterations)


def make_credential(mechanism: str, password: str, iterations: int = MIN_ITERATIONS,
                    salt: bytes | None = None) -> ScramCredential:
    algorithm = HASHES[mechanism]
    salt = salt if salt is not None else os.urandom(32)
    return credential_from_salted(algorithm, salted_password(algorithm, password, salt,
                                                             iterations), salt, iterations)


def credential_from_salted(algorithm: str, salted: bytes, salt: bytes, iterations: int
                           ) -> ScramCredential:
    client_key = _hmac(algorithm, salted, b"Client Key")
    return ScramCredential(salt, hashlib.new(algorithm, client_key).digest(),
                           _hmac(algorithm, salted, b"Server Key"), iterations)


def _attributes(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in message.split(","):
        if len(item) < 2 or item[1] != "=":
            raise SaslFailed(f"Invalid SCRAM message: bad attribute {item[:20]!r}")
        out.setdefault(item[0], item[2:])
    return out


def _unescape(name: str) -> str:
    if re.search(r"=(?!2C|3D)", name):
        raise SaslFailed("Invalid SCRAM user name: '=' must be escaped")
    return name.replace("=2C", ",").replace("=3D", "=")


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


Lookup = Callable[[str, str], Awaitable[ScramCredential | None]]  # (user, mechanism)


class ScramServer:
    def __init__(self, mechanism: str, lookup: Lookup) -> None:
        self.mechanism = mechanism
        self.algorithm = HASHES[mechanism]
        self.lookup = lookup
        self.complete = False
        self.authorization_id = ""
        self.lifetime_ms: int | None = None
        self._state = "first"
        self._client_first_bare = self._server_first = self._nonce = ""
        self._client_nonce = ""
        self._credential: ScramCredential | None = None

    async def evaluate(self, token: bytes) -> bytes:
        try:
            message = token.decode()
        except UnicodeDecodeError:
            raise SaslFailed("Invalid SCRAM message: not UTF-8") from None
        if self._state == "first":
            return await self._first(message)
        if self._state == "final":
            return self._final(message)
        raise SaslFailed("Unexpected SCRAM message after the exchange completed")

    async def _first(self, message: str) -> bytes:
        m = re.fullmatch(r"([ny]|p=[^,]*),(a=[^,]*)?,(.*)", message, re.S)
        if m is None:
            raise SaslFailed("Invalid SCRAM client-first message")
        if m.group(1).startswith("p="):
            raise SaslFailed("SCRAM channel binding is not supported")
        bare = m.group(3)
        attrs = _attributes(bare)
        if "n" not in attrs or "r" not in attrs or not attrs["r"]:
            raise SaslFailed("Invalid SCRAM client-first message: user or nonce missing")
        user = _unescape(attrs["n"])
        authzid = _unescape(m.group(2)[2:]) if m.group(2) else ""
        if authzid and authzid != user:
            raise SaslFailed("Authentication failed: Client requested an authorization id "
                             "that is different from username")
        credential = await self.lookup(user, self.mechanism)
        if credential is None:
            raise SaslFailed("Authentication failed: Invalid user credentials")
        self.authorization_id, self._credential = user, credential
        # alphanumeric, as Kafka's: librdkafka 2.0 mangles a nonce with '+' or '/'
        self._nonce = attrs["r"] + secrets.token_hex(16)
        self._client_first_bare = bare
        self._client_nonce = attrs["r"]
        self._server_first = (f"r={self._nonce},s={base64.b64encode(credential.salt).decode()}"
                              f",i={credential.iterations}")
        self._state = "final"
        return self._server_first.encode()

    def _final(self, message: str) -> bytes:
        self._state = "done"
        without_proof, sep, proof_text = message.rpartition(",p=")
        if not sep:
            raise SaslFailed("Invalid SCRAM client-final message: no proof")
        attrs = _attributes(without_proof)
        # librdkafka before 2.6.1 sends its own nonce once more in front of the combined
        # one; Kafka 3.8.1-3.9 accept that form (its nonce check is endsWith), and so do we
        if attrs.get("r") not in (self._nonce, self._client_nonce + self._nonce):
            raise SaslFailed("Invalid SCRAM client-final message: nonce mismatch")
        if attrs.get("c") not in ("biws", "eSws"):  # 'n,,' and 'y,,'
            raise SaslFailed("Invalid SCRAM client-final message: channel binding")
        try:
            proof = base64.b64decode(proof_text, validate=True)
        except ValueError:
            raise SaslFailed("Invalid SCRAM client-final message: bad proof") from None
        credential = self._credential
        assert credential is not None
        auth_message = ",".join((self._client_first_bare, self._server_first,
                                 without_proof)).encode()
        signature = _hmac(self.algorithm, credential.stored_key, auth_message)
        if len(proof) != len(signature):
            raise SaslFailed("Authentication failed: Invalid client final message")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self.algorithm, client_key).digest(),
                                   credential.stored_key):
            raise SaslFailed("Authentication failed: Invalid user credentials")
        self.complete = True
        server_signature = _hmac(self.algorithm, credential.server_key, auth_message)
        return b"v=" + base64.b64encode(server_signature)


class ScramClient:
    """The client side, for a broker's connections to other brokers."""

    def __init__(self, mechanism: str, user: str, password: str) -> None:
        self.algorithm = HASHES[mechanism]
        self.user, self.password = user, password
        self._nonce = base64.b64encode(os.urandom(24)).decode().rstrip("=")
        self._first_bare = f"n={_escape(user)},r={self._nonce}"
        self._auth_message = b""
        self._server_key = b""

    def first(self) -> bytes:
        return ("n,," + self._first_bare).encode()

    def final(self, server_first: bytes) -> bytes:
        attrs = _attributes(server_first.decode())
        nonce = attrs.get("r", "")
        if not nonce.startswith(self._nonce):
            raise SaslFailed("SCRAM server nonce does not extend the client's")
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        salted = salted_password(self.algorithm, self.password, salt, iterations)
        credential = credential_from_salted(self.algorithm, salted, salt, iterations)
        without_proof = f"c=biws,r={nonce}"
        self._auth_message = ",".join((self._first_bare, server_first.decode(),
                                       without_proof)).encode()
        signature = _hmac(self.algorithm, credential.stored_key, self._auth_message)
        client_key = _hmac(self.algorithm, salted, b"Client Key")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_key = credential.server_key
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        expected = b"v=" + base64.b64encode(
            _hmac(self.algorithm, self._server_key, self._auth_message))
        if not hmac.compare_digest(expected, server_final):
            raise SaslFailed("SCRAM server signature does not match")
