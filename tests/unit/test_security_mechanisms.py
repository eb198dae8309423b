"""Security pieces without a broker process: SCRAM against RFC 7677's example, principal
mapping rules, JAAS options, unsecured OAUTHBEARER tokens, listener configs, the SASL state
machine (strom.server.authenticator) with a manual clock, and the inter-broker client
(strom.security.inter_broker) against a real listener on the loop: TLS, mTLS principals,
PLAIN and SCRAM."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from types import SimpleNamespace

import pytest

from strom.clock import ManualClock
from strom.config import BrokerConfig, ConfigError
from strom.protocol.client import BrokerConnection, BrokerConnectionError, ClientSecurity
from strom.protocol.messages import make, request_schema
from strom.security import jaas, oauthbearer, scram, tls
from strom.security.credentials import ScramCredentials, user_path
from strom.security.inter_broker import client_security
from strom.security.listener import listener_security
from strom.security.mechanism import SaslFailed
from strom.server.authenticator import AuthenticationClose, Authenticator, SaslState
from strom.server.connection import Connection, ConnectionProtocol
from strom.testing.certs import TestCA
from strom.testing.security import plain_jaas

# --- SCRAM ------------------------------------------------------------------------------------

# RFC 7677, section 3
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_scram_server_and_client_match_rfc7677(monkeypatch):
    credential = scram.make_credential("SCRAM-SHA-256", "pencil", 4096, RFC_SALT)
    monkeypatch.setattr(scram.secrets, "token_hex", lambda n: RFC_SERVER_NONCE)

    async def lookup(user, mechanism):
        return credential if (user, mechanism) == ("user", "SCRAM-SHA-256") else None

    async def main():
        server = scram.ScramServer("SCRAM-SHA-256", lookup)
        first = await server.evaluate(f"n,,n=user,r={RFC_CLIENT_NONCE}".encode())
        assert first == (f"r={RFC_CLIENT_NONCE}{RFC_SERVER_NONCE},"
                         "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").encode()
        client = scram.ScramClient("SCRAM-SHA-256", "user", "pencil")
        client._nonce, client._first_bare = RFC_CLIENT_NONCE, f"n=user,r={RFC_CLIENT_NONCE}"
        assert client.final(first) == RFC_CLIENT_FINAL
        assert await server.evaluate(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL
        assert server.complete and server.authorization_id == "user"
        client.verify(RFC_SERVER_FINAL)

    asyncio.run(main())


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_wrong_password_and_unknown_user(mechanism):
    credential = scram.make_credential(mechanism, "right")
    text = credential.to_text()
    assert scram.ScramCredential.from_text(text) == credential

    async def lookup(user, _):
        return credential if user == "bob" else None

    async def attempt(user, password):
        server = scram.ScramServer(mechanism, lookup)
        client = scram.ScramClient(mechanism, user, password)
        client.verify(await server.evaluate(client.final(await server.evaluate(client.first()))))
        return server.authorization_id

    assert asyncio.run(attempt("bob", "right")) == "bob"
    with pytest.raises(SaslFailed, match="Invalid user credentials"):
        asyncio.run(attempt("bob", "wrong"))
    with pytest.raises(SaslFailed, match="Invalid user credentials"):
        asyncio.run(attempt("nobody", "right"))


@pytest.mark.parametrize("message", [b"", b"n,,", b"x,,n=bob,r=a", b"n,,n=bob", b"\xff",
                                     b"p=tls-unique,,n=bob,r=abc", b"n,,n=b=ob,r=abc"])
def test_scram_malformed_client_first(message):
    async def lookup(user, mechanism):
        return scram.make_credential(mechanism, "x")

    with pytest.raises(SaslFailed):
        asyncio.run(scram.ScramServer("SCRAM-SHA-256", lookup).evaluate(message))


# --- certificates and principals --------------------------------------------------------------

def test_principal_mapping_rules():
    mapper = tls.PrincipalMapper(
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=([^,]+),OU=(.*)$/$1@$2/L,DEFAULT")
    assert mapper.name("CN=kafka-svc,OU=ServiceUsers,O=acme") == "kafka-svc"
    assert mapper.name("CN=Alice,OU=Eng") == "alice@eng"
    assert mapper.name("O=acme") == "O=acme"
    assert tls.PrincipalMapper("DEFAULT").name("CN=x") == "CN=x"
    assert tls.PrincipalMapper("RULE:^CN=(.*)$/$1/U").name("CN=bob") == "BOB"
    with pytest.raises(ValueError):
        tls.PrincipalMapper("RULE:^CN=(.*)$/$1/").name("O=acme")
    with pytest.raises(ConfigError):
        tls.PrincipalMapper("RULE:broken")


def test_certificate_subject_is_rfc4514(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    ca = TestCA(tmp_path)
    der = x509.load_pem_x509_certificate(ca.client("alice").cert.read_bytes()).public_bytes(
        Encoding.DER)
    assert tls.certificate_subject(der) == "CN=alice,OU=test,O=strom"


def test_keystores_pem_pkcs12_and_errors(tmp_path):
    ca = TestCA(tmp_path)
    pair = ca.server()
    base = {"ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca.ca_pem)}

    def context(**values):
        config = {**base, **values}
        return tls.server_context(lambda k: config.get(k, BrokerConfig({}).get(k)))

    assert context(**{"ssl.keystore.type": "PEM", "ssl.keystore.location": str(pair.pem)})
    assert context(**{"ssl.keystore.type": "PEM",
                      "ssl.keystore.certificate.chain": pair.cert.read_text(),
                      "ssl.keystore.key": pair.key.read_text()})
    p12 = ca.server_pkcs12("p12-secret")
    ctx = context(**{"ssl.keystore.type": "PKCS12", "ssl.keystore.location": str(p12),
                     "ssl.keystore.password": "p12-secret", "ssl.client.auth": "required"})
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match="wrong ssl.keystore.password"):
        context(**{"ssl.keystore.type": "PKCS12", "ssl.keystore.location": str(p12),
                   "ssl.keystore.password": "nope"})
    with pytest.raises(ConfigError, match="JKS"):
        context(**{"ssl.keystore.location": str(pair.pem)})  # Kafka's default type
    with pytest.raises(ConfigError, match="needs a keystore"):
        context()
    with pytest.raises(ConfigError, match="TLSv1.2, TLSv1.3"):
        context(**{"ssl.keystore.type": "PEM", "ssl.keystore.location": str(pair.pem),
                   "ssl.enabled.protocols": ["TLSv1.1"]})


# --- configs ----------------------------------------------------------------------------------

def test_jaas_options():
    assert jaas.parse_options(
        'org.apache.kafka.common.security.plain.PlainLoginModule required username="a b" '
        'password="p\\"w" user_alice=secret;') == {"username": "a b", "password": 'p"w',
                                                   "user_alice": "secret"}
    for bad in ("PlainLoginModule", 'M required user="x"', 'M required user="x;'):
        with pytest.raises(ConfigError):
            jaas.parse_options(bad)


def test_listener_configs():
    c = BrokerConfig({"listeners": "CLIENT://:9093,BROKER://:9094",
                      "listener.security.protocol.map": "CLIENT:SASL_SSL,BROKER:PLAINTEXT",
                      "inter.broker.listener.name": "BROKER",
                      "listener.name.client.scram-sha-256.sasl.jaas.config": "A required;",
                      "listener.name.client.ssl.client.auth": "required"})
    assert c.security_protocol("CLIENT") == "SASL_SSL"
    assert c.inter_broker_listener() == "BROKER"
    assert c.for_listener("CLIENT", "sasl.jaas.config", "SCRAM-SHA-256") == "A required;"
    assert c.for_listener("CLIENT", "ssl.client.auth") == "required"
    assert c.for_listener("BROKER", "ssl.client.auth") == "none"
    for bad in ({"listeners": "CLIENT://:9093"},  # not in the default map
                {"listener.security.protocol.map": "PLAINTEXT:TLS"},
                {"security.inter.broker.protocol": "SSL"},  # no SSL listener
                {"listeners": "PLAINTEXT://:1,SSL://:2", "inter.broker.listener.name": "SSL",
                 "security.inter.broker.protocol": "SSL"}):
        with pytest.raises(ConfigError):
            BrokerConfig(bad)
    c = BrokerConfig({"listeners": "PLAINTEXT://:1,SSL://:2",
                      "security.inter.broker.protocol": "SSL"})
    assert c.inter_broker_listener() == "SSL"
    with pytest.raises(ConfigError, match="GSSAPI"):  # Kafka's default mechanism
        listener_security(BrokerConfig({"listeners": "SASL_PLAINTEXT://:1"}),
                          "SASL_PLAINTEXT", None)


# --- OAUTHBEARER -------------------------------------------------------------------------------

def _jws(header: dict, claims: dict) -> str:
    def enc(o):
        return base64.urlsafe_b64encode(json.dumps(o).encode()).decode().rstrip("=")
    return f"{enc(header)}.{enc(claims)}."


def test_unsecured_oauthbearer_tokens():
    now = 1_700_000_000.0
    validator = oauthbearer.UnsecuredValidator(
        {"unsecuredValidatorRequiredScope": "kafka"}, now_ms=lambda: now * 1000)
    good = _jws({"alg": "none"}, {"sub": "erin", "exp": now + 60, "scope": "kafka other"})
    assert validator.validate(good) == ("erin", 60000)
    for claims, reason in (({"sub": "erin", "exp": now - 1, "scope": "kafka"}, "expired"),
                           ({"exp": now + 60, "scope": "kafka"}, "'sub'"),
                           ({"sub": "erin", "scope": "kafka"}, "'exp'"),
                           ({"sub": "erin", "exp": now + 60}, "insufficient_scope")):
        with pytest.raises(SaslFailed, match=reason):
            validator.validate(_jws({"alg": "none"}, claims))
    with pytest.raises(SaslFailed, match="alg"):
        validator.validate(_jws({"alg": "RS256"}, {"sub": "e", "exp": now + 9}))
    server = oauthbearer.OAuthBearerServer(validator)
    assert asyncio.run(server.evaluate(oauthbearer.client_message(good))) == b""
    assert server.authorization_id == "erin" and server.lifetime_ms == 60000


# --- the SASL state machine ---------------------------------------------------------------------

def _frame(api_key: int, version: int, correlation_id: int, **body) -> bytes:
    from strom.protocol.messages import encode_request

    return encode_request(correlation_id, "test", make(request_schema(api_key, version),
                                                       **body))[4:]


def _authenticator(reauth_ms: int = 0):
    config = BrokerConfig({"listeners": "SASL_PLAINTEXT://:1",
                           "sasl.enabled.mechanisms": "PLAIN",
                           "sasl.jaas.config": plain_jaas({"admin": "a", "alice": "b"}),
                           "connections.max.reauth.ms": reauth_ms})
    clock = ManualClock()
    security = listener_security(config, "SASL_PLAINTEXT", None)
    return Authenticator(security, "test", lambda: clock.monotonic() * 1000), clock


def test_authenticator_states_and_session_expiry():
    auth, clock = _authenticator(reauth_ms=1000)

    async def main():
        assert auth.max_frame_bytes == 524288
        assert await auth.intercept(_frame(18, 0, 1)) is None  # ApiVersions: dispatched
        with pytest.raises(AuthenticationClose):  # a Metadata request before SASL
            await auth.intercept(_frame(3, 1, 2, topics=None))
        assert not (await auth.intercept(_frame(17, 1, 3, mechanism="PLAIN"))).close
        assert auth.state is SaslState.AUTHENTICATE
        with pytest.raises(AuthenticationClose):  # not a SaslAuthenticate
            await auth.intercept(_frame(18, 0, 4))
        answer = await auth.intercept(_frame(36, 2, 5, auth_bytes=b"\0alice\0b"))
        assert not answer.close and auth.principal == "User:alice"
        assert auth.authenticated and auth.max_frame_bytes is None
        assert await auth.intercept(_frame(3, 1, 6, topics=None)) is None
        clock.advance(1000)
        with pytest.raises(AuthenticationClose, match="re-authenticate"):
            await auth.intercept(_frame(3, 1, 7, topics=None))
        # re-authentication restarts the session; another principal is refused
        assert not (await auth.intercept(_frame(17, 1, 8, mechanism="PLAIN"))).close
        await auth.intercept(_frame(36, 2, 9, auth_bytes=b"\0alice\0b"))
        assert await auth.intercept(_frame(3, 1, 10, topics=None)) is None
        await auth.intercept(_frame(17, 1, 11, mechanism="PLAIN"))
        answer = await auth.intercept(_frame(36, 2, 12, auth_bytes=b"\0admin\0a"))
        assert answer.close and auth.state is SaslState.FAILED

    asyncio.run(main())


def test_authenticator_unknown_mechanism_and_raw_v0_tokens():
    async def main():
        auth, _ = _authenticator()
        answer = await auth.intercept(_frame(17, 1, 1, mechanism="GSSAPI"))
        assert answer.close and auth.state is SaslState.FAILED
        auth, _ = _authenticator()
        await auth.intercept(_frame(17, 0, 1, mechanism="PLAIN"))
        answer = await auth.intercept(b"\0alice\0b")  # a raw token, not a request
        assert answer.response == b"\0\0\0\0" and auth.principal == "User:alice"
        auth, _ = _authenticator()
        await auth.intercept(_frame(17, 0, 1, mechanism="PLAIN"))
        with pytest.raises(AuthenticationClose):
            await auth.intercept(b"\0alice\0wrong")

    asyncio.run(main())


# --- the inter-broker client against a real listener -------------------------------------------

class _Store:
    def __init__(self) -> None:
        self.nodes: dict[str, bytes] = {}

    async def get(self, path):
        return (self.nodes[path], 0) if path in self.nodes else None

    async def create(self, path, data):
        self.nodes[path] = data

    async def set(self, path, data, version=-1):
        self.nodes[path] = data


class _Principals:
    """A stand-in dispatcher: records the principal of each request it is given and
    answers it as ApiVersions v0."""

    def __init__(self) -> None:
        self.services = SimpleNamespace(clock=ManualClock())
        self.seen: list[str] = []

    fast_path = None  # a Dispatcher without one (as with metrics on)

    async def dispatch(self, frame, client, client_host, listener, appended=None,
                       principal="User:ANONYMOUS", throttled=None):
        from strom.api.api_versions import build_response
        from strom.protocol.messages import encode_response, peek_header

        self.seen.append(principal)
        return encode_response(peek_header(frame)[2], build_response(0))


def _secure_config(tmp_path, protocol: str, mechanism: str = "PLAIN", client_auth="none"):
    ca = TestCA(tmp_path)
    server, client = ca.server(), ca.client("Broker2")
    jaas_text = plain_jaas({"admin": "admin-secret"})
    if mechanism.startswith("SCRAM"):
        jaas_text = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                     'username="admin" password="admin-secret";')
    return BrokerConfig({
        "listeners": f"{protocol}://127.0.0.1:0", "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(server.pem),
        "ssl.truststore.type": "PEM", "ssl.truststore.location": str(ca.ca_pem),
        "ssl.client.auth": client_auth,
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+),.*$/$1/L",
        "sasl.enabled.mechanisms": mechanism, "sasl.mechanism.inter.broker.protocol": mechanism,
        f"listener.name.{protocol.lower()}.{mechanism.lower()}.sasl.jaas.config": jaas_text,
    }), client


async def _one_request(conn) -> None:
    await conn.request(make(request_schema(18, 0)))


async def _serve_and_connect(config, protocol, store, client_pem=None, security=None,
                             talk=_one_request):
    """A listener with `config`'s security on the loop, and a BrokerConnection to it that
    connects and runs `talk(conn)`; the principals the dispatcher saw."""
    dispatcher = _Principals()
    listener = listener_security(config, protocol, ScramCredentials(store))
    tasks = []

    def connected(p):
        tasks.append(asyncio.get_running_loop().create_task(
            Connection(p, dispatcher, protocol, -1, listener).serve()))

    server = await asyncio.get_running_loop().create_server(
        lambda: ConnectionProtocol(1 << 20, connected), "127.0.0.1", 0,
        ssl=listener.ssl_context)
    port = server.sockets[0].getsockname()[1]
    security = security or client_security(config)
    if client_pem is not None:  # mTLS: the "other broker" shows its own certificate
        security.ssl_context.load_cert_chain(str(client_pem))
    conn = BrokerConnection("127.0.0.1", port, timeout_s=10, security=security)
    try:
        await conn.connect()
        await talk(conn)
    finally:
        await conn.close()
        server.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return dispatcher.seen


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_inter_broker_client_over_sasl_ssl(tmp_path, mechanism):
    config, _ = _secure_config(tmp_path, "SASL_SSL", mechanism)
    store = _Store()
    if mechanism.startswith("SCRAM"):
        store.nodes[user_path("admin")] = json.dumps({"version": 1, "config": {
            mechanism: scram.make_credential(mechanism, "admin-secret").to_text()}}).encode()
    assert asyncio.run(_serve_and_connect(config, "SASL_SSL", store)) == ["User:admin"]


def test_inter_broker_client_fails_cleanly_on_bad_credentials(tmp_path):
    config, _ = _secure_config(tmp_path, "SASL_PLAINTEXT", "SCRAM-SHA-256")
    with pytest.raises(BrokerConnectionError, match="Invalid user credentials"):
        asyncio.run(_serve_and_connect(config, "SASL_PLAINTEXT", _Store()))


def test_mtls_principal_is_the_mapped_subject(tmp_path):
    config, client = _secure_config(tmp_path, "SSL", client_auth="required")
    assert asyncio.run(_serve_and_connect(config, "SSL", _Store(), client.pem)) == \
        ["User:broker2"]
    # the broker's own keystore is its client certificate by default
    assert asyncio.run(_serve_and_connect(config, "SSL", _Store())) == ["User:localhost"]
    bare = ssl.create_default_context(cafile=config.get("ssl.truststore.location"))
    with pytest.raises(BrokerConnectionError):  # no client certificate: no connection
        asyncio.run(_serve_and_connect(config, "SSL", _Store(),
                                       security=ClientSecurity(bare)))


# --- OAUTHBEARER with a JWKS ---------------------------------------------------------------------

def test_jwks_validator(tmp_path):
    import time

    from joserfc import jwt
    from joserfc.jwk import ECKey, KeySet

    from strom.security.jwks import JwksValidator

    key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    other = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(KeySet([key]).as_dict(private=False)))
    config = BrokerConfig({"sasl.oauthbearer.jwks.endpoint.url": path.as_uri(),
                           "sasl.oauthbearer.expected.issuer": "idp",
                           "sasl.oauthbearer.expected.audience": "kafka,other"})
    now = float(int(time.time()))
    validator = JwksValidator(config.get, now=lambda: now)

    def token(signer=key, **claims):
        base = {"sub": "frank", "iss": "idp", "aud": "kafka", "exp": int(now) + 60}
        return jwt.encode({"alg": "ES256", "kid": "k1"}, {**base, **claims}, signer)

    assert validator.validate(token()) == ("frank", 60000)
    for bad, reason in ((token(iss="evil"), "iss"), (token(aud="nobody"), "aud"),
                        (token(exp=int(now) - 120), "expired|exp"),
                        (token(signer=other), "signature|invalid"),
                        (_jws({"alg": "none"}, {"sub": "x", "exp": now + 60}), "invalid")):
        with pytest.raises(SaslFailed, match=reason):
            validator.validate(bad)
    with pytest.raises(ConfigError):
        JwksValidator(BrokerConfig({"sasl.oauthbearer.jwks.endpoint.url":
                                    (tmp_path / "missing.json").as_uri()}).get)


def test_inter_broker_client_reauthenticates_before_the_session_ends(tmp_path):
    config, _ = _secure_config(tmp_path, "SASL_PLAINTEXT", "SCRAM-SHA-256")
    config = BrokerConfig({**config.values, **config.unknown,
                           "connections.max.reauth.ms": 300})
    store = _Store()
    store.nodes[user_path("admin")] = json.dumps({"version": 1, "config": {
        "SCRAM-SHA-256": scram.make_credential("SCRAM-SHA-256", "admin-secret").to_text()}}
    ).encode()
    reads = []
    real_get = store.get

    async def counting_get(path):
        reads.append(path)
        return await real_get(path)

    store.get = counting_get

    async def talk(conn):
        await conn.request(make(request_schema(18, 0)))
        await asyncio.sleep(0.3)  # past 85 % of the 300 ms session
        await asyncio.gather(conn.request(make(request_schema(18, 0))),
                             conn.request(make(request_schema(18, 0))))

    seen = asyncio.run(_serve_and_connect(config, "SASL_PLAINTEXT", store, talk=talk))
    assert seen == ["User:admin"] * 3
    assert len(reads) == 2  # the credential was read by each of the two logins
