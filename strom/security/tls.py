"""TLS for SSL and SASL_SSL listeners, and for a broker's connections to other brokers, from
Kafka's `ssl.*` configs (each may be given per listener as
`listener.name.<listener>.ssl.<key>`).

Keystores: `ssl.keystore.type=PEM` with `ssl.keystore.location` (a file with the private key
and the certificate chain) or the inline `ssl.keystore.certificate.chain` and
`ssl.keystore.key`; `ssl.keystore.type=PKCS12` with `ssl.keystore.location` and
`ssl.keystore.password` (read with `cryptography`, handed to OpenSSL as PEM). Truststores:
PEM (`ssl.truststore.location` or the inline `ssl.truststore.certificates`) or PKCS12. JKS is
Java's own format and is refused with a message saying so.

`ssl.client.auth`: required (mTLS; a client without a certificate from a trusted CA fails
the handshake), requested (a certificate is checked when given), none. The principal of an
SSL connection is `User:<subject>`, the subject in RFC 4514 form (`CN=alice,OU=eng,O=acme`)
mapped by `ssl.principal.mapping.rules` (see `PrincipalMapper`); without a client
certificate it is `User:ANONYMOUS`, as in Kafka.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strom.config import ConfigError

ANONYMOUS = "User:ANONYMOUS"
_TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {"required": ssl.CERT_REQUIRED, "requested": ssl.CERT_OPTIONAL,
                "none": ssl.CERT_NONE}

Get = Callable[[str], Any]  # a config key -> its value for the listener

log = logging.getLogger(__name__)

# at most one handshake-failure line per listener and reason in this many seconds (a flood
# of bad clients must not flood the log); the lines say how many were not logged
FAILURE_LOG_INTERVAL_S = 10.0


class _HandshakeFailures:
    """Logs failed TLS handshakes of one listener: asyncio and uvloop report them only in
    debug mode, and an operator needs to see plaintext clients or untrusted certificates."""

    def __init__(self, listener: str) -> None:
        self.listener = listener
        self._last: dict[str, tuple[float, int]] = {}  # reason -> (logged at, not logged)

    def failed(self, e: ssl.SSLError) -> None:
        reason = e.reason or type(e).__name__
        now = time.monotonic()
        logged_at, skipped = self._last.get(reason, (-FAILURE_LOG_INTERVAL_S, 0))
        if now - logged_at < FAILURE_LOG_INTERVAL_S:
            self._last[reason] = (logged_at, skipped + 1)
            return
        self._last[reason] = (now, 0)
        more = f" ({skipped} more since the last report)" if skipped else ""
        log.warning("TLS handshake failed on listener %s: %s%s (%s)", self.listener, reason,
                    more, _HINTS.get(reason, e))


_HINTS = {
    "WRONG_VERSION_NUMBER": "a client speaking plaintext to a TLS listener?",
    "HTTP_REQUEST": "an HTTP client on a Kafka TLS listener",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "ssl.client.auth=required: the client sent no "
                                         "certificate",
    "CERTIFICATE_VERIFY_FAILED": "the client's certificate is not signed by a CA in the "
                                 "truststore, or has expired",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust this broker's certificate",
    "UNSUPPORTED_PROTOCOL": "the client's TLS version is not in ssl.enabled.protocols",
    "NO_SHARED_CIPHER": "no cipher in common with the client (ssl.cipher.suites)",
}


def _logging_sslobject(failures: _HandshakeFailures) -> type[ssl.SSLObject]:
    """The SSLObject class of a listener's context: asyncio and uvloop make one per
    connection (`wrap_bio`), so its handshake failures reach the log."""

    class ListenerSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as e:
                failures.failed(e)
                raise

    return ListenerSSLObject


def server_context(get: Get, listener: str = "") -> ssl.SSLContext:
    """The context of an SSL or SASL_SSL listener; raises ConfigError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.sslobject_class = _logging_sslobject(_HandshakeFailures(listener))
    _common(ctx, get)
    _load_keystore(ctx, get, required=True)
    ctx.verify_mode = _CLIENT_AUTH[get("ssl.client.auth")]
    if ctx.verify_mode != ssl.CERT_NONE:
        if not _load_truststore(ctx, get):
            raise ConfigError(f"ssl.client.auth={get('ssl.client.auth')} needs a truststore "
                              "(ssl.truststore.location or ssl.truststore.certificates)")
    return ctx


def client_context(get: Get) -> ssl.SSLContext:
    """The context a broker connects to another broker's SSL listener with: it trusts the
    truststore (else the system's CAs), checks the host name unless
    ssl.endpoint.identification.algorithm is empty, and shows its keystore's certificate
    when it has one (for listeners with ssl.client.auth)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _common(ctx, get)
    if not _load_truststore(ctx, get):
        ctx.load_default_certs()
    ctx.check_hostname = bool(get("ssl.endpoint.identification.algorithm"))
    _load_keystore(ctx, get, required=False)
    return ctx


def _common(ctx: ssl.SSLContext, get: Get) -> None:
    versions = [_TLS_VERSIONS[v] for v in get("ssl.enabled.protocols") if v in _TLS_VERSIONS]
    if not versions:
        raise ConfigError("ssl.enabled.protocols names no protocol strom serves "
                          "(TLSv1.2, TLSv1.3)")
    ctx.minimum_version, ctx.maximum_version = min(versions), max(versions)
    suites = get("ssl.cipher.suites")
    if suites:
        try:
            ctx.set_ciphers(":".join(suites))
        except ssl.SSLError as e:
            raise ConfigError(f"Invalid value for ssl.cipher.suites: {e}") from None


def _password(get: Get, key: str) -> bytes | None:
    value = get(key)
    return value.encode() if value else None


def _load_keystore(ctx: ssl.SSLContext, get: Get, required: bool) -> None:
    kind = get("ssl.keystore.type")
    location = get("ssl.keystore.location")
    chain, key = get("ssl.keystore.certificate.chain"), get("ssl.keystore.key")
    if chain or key:
        if kind != "PEM":
            raise ConfigError("ssl.keystore.certificate.chain and ssl.keystore.key need "
                              "ssl.keystore.type=PEM")
        if not (chain and key):
            raise ConfigError("ssl.keystore.certificate.chain and ssl.keystore.key go "
                              "together")
        _load_pem_chain(ctx, key + "\n" + chain, _password(get, "ssl.key.password"))
        return
    if not location:
        if required:
            raise ConfigError("An SSL listener needs a keystore: ssl.keystore.location (or "
                              "ssl.keystore.certificate.chain with ssl.keystore.key)")
        return
    if kind == "JKS":
        raise ConfigError("ssl.keystore.type=JKS is Java's format: convert the keystore to "
                          "PKCS12 (keytool -importkeystore) or PEM")
    try:
        if kind == "PKCS12":
            with open(location, "rb") as f:
                data = f.read()
            _load_pem_chain(ctx, _pkcs12_to_pem(data, _password(get, "ssl.keystore.password"),
                                                location), None)
        else:
            ctx.load_cert_chain(location, password=_password(get, "ssl.key.password")
                                or _password(get, "ssl.keystore.password"))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"Cannot load the keystore {location}: {e}") from None


def _load_pem_chain(ctx: ssl.SSLContext, pem: str, password: bytes | None) -> None:
    """OpenSSL reads a key and chain from a file only: a private temporary file, removed at
    once."""
    fd, path = tempfile.mkstemp(prefix="strom-keystore-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        ctx.load_cert_chain(path, password=password)
    except ssl.SSLError as e:
        raise ConfigError(f"Cannot load the keystore: {e}") from None
    finally:
        os.unlink(path)


def _pkcs12_to_pem(data: bytes, password: bytes | None, where: str) -> str:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        pkcs12,
    )

    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError as e:
        raise ConfigError(f"Cannot read the PKCS12 keystore {where} (wrong "
                          f"ssl.keystore.password?): {e}") from None
    if key is None or cert is None:
        raise ConfigError(f"The PKCS12 keystore {where} holds no private key and certificate")
    parts = [key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode(),
             cert.public_bytes(Encoding.PEM).decode()]
    parts += [c.public_bytes(Encoding.PEM).decode() for c in extra or ()]
    return "".join(parts)


def _load_truststore(ctx: ssl.SSLContext, get: Get) -> bool:
    inline = get("ssl.truststore.certificates")
    location = get("ssl.truststore.location")
    kind = get("ssl.truststore.type")
    try:
        if inline:
            ctx.load_verify_locations(cadata=inline)
            return True
        if not location:
            return False
        if kind == "JKS":
            raise ConfigError("ssl.truststore.type=JKS is Java's format: use PKCS12 or PEM")
        if kind == "PKCS12":
            from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

            with open(location, "rb") as f:
                store = pkcs12.load_pkcs12(f.read(), _password(get, "ssl.truststore.password"))
            certs = [c.certificate for c in store.additional_certs]
            if store.cert is not None:
                certs.append(store.cert.certificate)
            if not certs:
                raise ConfigError(f"The PKCS12 truststore {location} holds no certificate")
            ctx.load_verify_locations(
                cadata="".join(c.public_bytes(Encoding.PEM).decode() for c in certs))
        else:
            ctx.load_verify_locations(cafile=location)
        return True
    except (OSError, ValueError, ssl.SSLError) as e:
        raise ConfigError(f"Cannot load the truststore {location or '(inline)'}: {e}") \
            from None


# --- the principal of a certificate ----------------------------------------------------------

_RULE = re.compile(r"\s*(DEFAULT|RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?))\s*(,|$)")


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern | None  # None: DEFAULT
    replacement: str
    case: str  # '', 'L' or 'U'


class PrincipalMapper:
    """ssl.principal.mapping.rules, as Kafka's SslPrincipalMapper: the first rule whose
    pattern matches the whole subject gives the name (`$1` in the replacement is a group;
    `/L` and `/U` change the case); DEFAULT gives the subject as it is. A subject no rule
    matches cannot authenticate."""

    def __init__(self, rules: str) -> None:
        self.rules: list[_Rule] = []
        text, pos = (rules or "DEFAULT").strip(), 0
        while pos < len(text):
            m = _RULE.match(text, pos)
            if m is None or m.end() == pos:
                raise ConfigError(f"Invalid rule in ssl.principal.mapping.rules: "
                                  f"{text[pos:]!r}")
            if m.group(1) == "DEFAULT":
                self.rules.append(_Rule(None, "", ""))
            else:
                try:
                    pattern = re.compile(m.group(2))
                except re.error as e:
                    raise ConfigError(f"Invalid pattern in ssl.principal.mapping.rules: "
                                      f"{m.group(2)!r}: {e}") from None
                replacement = re.sub(r"\$(\d)", r"\\g<\1>", m.group(3))
                self.rules.append(_Rule(pattern, replacement, m.group(4)))
            pos = m.end()

    def name(self, subject: str) -> str:
        for rule in self.rules:
            if rule.pattern is None:
                return subject
            if rule.pattern.fullmatch(subject):
                out = rule.pattern.sub(rule.replacement, subject)
                return out.lower() if rule.case == "L" else \
                    out.upper() if rule.case == "U" else out
        raise ValueError(f"no ssl.principal.mapping.rules rule matches {subject!r}")


def certificate_subject(der: bytes) -> str:
    """The subject of a DER certificate in RFC 4514 form (most specific first)."""
    from cryptography import x509

    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def ssl_principal(ssl_object: Any, mapper: PrincipalMapper) -> str:
    """The principal of a TLS connection: its client certificate's subject, mapped; or
    User:ANONYMOUS when the client showed none. Raises ValueError when no rule maps it."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return ANONYMOUS
    return "User:" + mapper.name(certificate_subject(der))
