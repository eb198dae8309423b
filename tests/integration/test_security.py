"""TLS and SASL against one broker with every kind of listener (strom.testing.security):
confluent-kafka, kafka-python, aiokafka and kcat produce, consume in a group and make admin
calls over SSL (one-way and mutual), SASL_PLAINTEXT and SASL_SSL with PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512 (users made with `strom configs --entity-type users`) and OAUTHBEARER
(unsecured tokens). Bad input goes over raw sockets (strom.testing.wire, which shares no
code with the broker): each gets Kafka's error code or a clean close, and the broker keeps
serving.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from strom.testing.broker import BrokerProcess
from strom.testing.cluster import wait_until
from strom.testing.processes import free_port
from strom.testing.security import SecureListeners
from strom.testing.wire import Closed, KafkaSocket, Reader, nbytes, request, string

pytestmark = pytest.mark.timeout(180)

SCRAM_USER = "carol"
SCRAM_PASSWORD = "carol-secret"
HANDSHAKE, AUTHENTICATE, METADATA = 17, 36, 3
JWKS_KEY = ECKey.generate_key("P-256", parameters={"kid": "idp-1"})


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    listeners = SecureListeners.make(tmp_path_factory.mktemp("certs"))
    overrides = listeners.overrides()
    overrides["group.initial.rebalance.delay.ms"] = "0"
    # one more listener whose OAUTHBEARER tokens must be signed by a key of a JWKS
    listeners.jwks_port = free_port()
    jwks_file = listeners.ca.dir / "jwks.json"
    jwks_file.write_text(json.dumps(KeySet([JWKS_KEY]).as_dict(private=False)))
    overrides["listeners"] += f",JWKS://127.0.0.1:{listeners.jwks_port}"
    overrides["listener.security.protocol.map"] += ",JWKS:SASL_PLAINTEXT"
    overrides["listener.name.jwks.sasl.enabled.mechanisms"] = "OAUTHBEARER"
    overrides["listener.name.jwks.oauthbearer.sasl.oauthbearer.jwks.endpoint.url"] = \
        jwks_file.as_uri()
    overrides["sasl.oauthbearer.expected.audience"] = "kafka"
    broker = BrokerProcess(overrides=overrides, port=listeners.plaintext)
    broker.start()
    try:
        for mechanism, iterations in (("SCRAM-SHA-256", 8192), ("SCRAM-SHA-512", 4096)):
            strom_cli("configs", "--bootstrap-server", broker.bootstrap, "--alter",
                      "--entity-type", "users", "--entity-name", SCRAM_USER, "--add-config",
                      f"{mechanism}=[iterations={iterations},password={SCRAM_PASSWORD}]")
        yield listeners, broker
    finally:
        broker.close()


def strom_cli(*args: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-m", "strom", *args], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def user_for(mechanism: str | None) -> tuple[str, str | None]:
    if mechanism and mechanism.startswith("SCRAM"):
        return SCRAM_USER, SCRAM_PASSWORD
    return "alice", None


def produce_consume_confluent(conf: dict, topic: str, n: int = 5) -> list[bytes]:
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(timeout=30)
    assert topic in admin.list_topics(timeout=30).topics
    producer = Producer({**conf, "message.timeout.ms": 20000})
    for i in range(n):
        producer.produce(topic, b"v%d" % i, key=b"k%d" % i)
    assert producer.flush(30) == 0
    consumer = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return sorted(got)


# --- confluent-kafka ---------------------------------------------------------------------

@pytest.mark.parametrize("listener,mechanism", [
    ("SSL", None), ("MTLS", None), ("SASL_PLAINTEXT", "PLAIN"),
    ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512"),
    ("SASL_SSL", "OAUTHBEARER"),
])
def test_confluent_kafka(secure, topic_name, listener, mechanism):
    listeners, _ = secure
    user, password = user_for(mechanism)
    cert = listeners.ca.client("alice") if listener == "MTLS" else None
    conf = listeners.confluent(listener, mechanism, user, password, cert)
    assert produce_consume_confluent(conf, topic_name) == [b"v%d" % i for i in range(5)]


def test_scram_credentials_are_described(secure, tmp_path):
    listeners, _ = secure
    # the tool itself over SASL_SSL, its client settings in --command-config
    conf = listeners.confluent("SASL_SSL", "SCRAM-SHA-256", SCRAM_USER, SCRAM_PASSWORD)
    properties = tmp_path / "client.properties"
    properties.write_text("".join(f"{k}={v}\n" for k, v in conf.items()
                                  if k != "bootstrap.servers"))
    out = strom_cli("configs", "--bootstrap-server", str(conf["bootstrap.servers"]),
                    "--command-config", str(properties), "--describe", "--entity-type",
                    "users", "--entity-name", SCRAM_USER)
    assert "SCRAM-SHA-256=iterations=8192" in out and "SCRAM-SHA-512=iterations=4096" in out


def test_scram_credential_admin_errors(secure):
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    _, broker = secure
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    few = UserScramCredentialUpsertion(
        "heidi", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"pw")
    with pytest.raises(KafkaException, match="Too few iterations"):
        admin.alter_user_scram_credentials([few])["heidi"].result(timeout=30)
    missing = UserScramCredentialDeletion("heidi", ScramMechanism.SCRAM_SHA_512)
    with pytest.raises(KafkaException, match="does not exist"):
        admin.alter_user_scram_credentials([missing])["heidi"].result(timeout=30)
    with pytest.raises(KafkaException, match="does not exist"):
        admin.describe_user_scram_credentials(["heidi"])["heidi"].result(timeout=30)
    described = admin.describe_user_scram_credentials().result(timeout=30)
    assert SCRAM_USER in described and "heidi" not in described


def test_scram_deleted_credential_no_longer_authenticates(secure, topic_name):
    listeners, broker = secure
    strom_cli("configs", "--bootstrap-server", broker.bootstrap, "--alter", "--entity-type",
              "users", "--entity-name", "dave", "--add-config",
              "SCRAM-SHA-256=[password=dave-secret]")
    conf = listeners.confluent("SASL_PLAINTEXT", "SCRAM-SHA-256", "dave", "dave-secret")
    assert AdminClient(conf).list_topics(timeout=30).brokers
    strom_cli("configs", "--bootstrap-server", broker.bootstrap, "--alter", "--entity-type",
              "users", "--entity-name", "dave", "--delete-config", "SCRAM-SHA-256")
    with KafkaSocket("127.0.0.1", listeners.sasl_plaintext) as s:
        assert handshake(s, "SCRAM-SHA-256")[0] == 0
        code, message, _, _ = authenticate(s, b"n,,n=dave,r=abcdefgh")
        assert code == 58 and "Invalid user credentials" in message
        assert s.wait_closed()


def _signed_token_cb(key):
    def oauth_cb(_config):
        expiry = int(time.time()) + 300
        token = jwt.encode({"alg": "ES256", "kid": "idp-1"},
                           {"sub": "grace", "aud": "kafka", "exp": expiry}, key)
        return token, expiry
    return oauth_cb


def test_confluent_kafka_oauthbearer_signed_by_jwks(secure, topic_name):
    listeners, _ = secure
    conf = {"bootstrap.servers": f"127.0.0.1:{listeners.jwks_port}",
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
            "oauth_cb": _signed_token_cb(JWKS_KEY)}
    assert produce_consume_confluent(conf, topic_name) == [b"v%d" % i for i in range(5)]
    forged = {**conf, "oauth_cb": _signed_token_cb(ECKey.generate_key(
        "P-256", parameters={"kid": "idp-1"}))}
    with pytest.raises(KafkaException):
        AdminClient(forged).list_topics(timeout=2)


# --- kafka-python and aiokafka -------------------------------------------------------------

def _python_client_settings(listeners, listener, mechanism):
    protocol = {"MTLS": "SSL"}.get(listener, listener)
    settings: dict = {"bootstrap_servers": listeners.bootstrap(listener),
                      "security_protocol": protocol}
    if protocol.endswith("SSL"):
        settings["ssl_cafile"] = str(listeners.ca.ca_pem)
        settings["ssl_check_hostname"] = True
    if listener == "MTLS":
        cert = listeners.ca.client("bob")
        settings["ssl_certfile"], settings["ssl_keyfile"] = str(cert.cert), str(cert.key)
    if mechanism == "OAUTHBEARER":
        from kafka.net.sasl.oauth import AbstractTokenProvider

        from strom.security.oauthbearer import unsecured_token

        class Token(AbstractTokenProvider):
            def token(self) -> str:
                return unsecured_token("ivan")

        settings.update(sasl_mechanism=mechanism, sasl_oauth_token_provider=Token())
    elif mechanism:
        user, password = user_for(mechanism)
        settings.update(sasl_mechanism=mechanism, sasl_plain_username=user,
                        sasl_plain_password=password or "alice-secret")
    return settings


@pytest.mark.parametrize("listener,mechanism", [
    ("SASL_SSL", "PLAIN"), ("MTLS", None), ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SASL_PLAINTEXT", "OAUTHBEARER"),
])
def test_kafka_python(secure, topic_name, listener, mechanism):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient
    from kafka.admin import NewTopic as KNewTopic

    listeners, _ = secure
    settings = _python_client_settings(listeners, listener, mechanism)
    admin = KafkaAdminClient(**settings)
    try:
        admin.create_topics([KNewTopic(topic_name, 1, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(**settings)
    for i in range(5):
        producer.send(topic_name, b"v%d" % i)
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(topic_name, group_id=f"g-{topic_name}",
                             auto_offset_reset="earliest", consumer_timeout_ms=20000,
                             **settings)
    got = []
    for m in consumer:
        got.append(m.value)
        if len(got) == 5:
            break
    consumer.commit()
    consumer.close()
    assert got == [b"v%d" % i for i in range(5)]


def _token_provider():
    """aiokafka's token provider: an unsecured JWS, as librdkafka's unsecure.jwt."""
    from aiokafka.abc import AbstractTokenProvider

    from strom.security.oauthbearer import unsecured_token

    class Token(AbstractTokenProvider):
        async def token(self) -> str:
            return unsecured_token("erin")

    return Token()


@pytest.mark.parametrize("listener,mechanism", [
    ("SASL_SSL", "SCRAM-SHA-256"), ("SSL", None), ("SASL_PLAINTEXT", "OAUTHBEARER"),
])
def test_aiokafka(secure, topic_name, listener, mechanism):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.helpers import create_ssl_context

    listeners, _ = secure

    async def main() -> list[bytes]:
        settings: dict = {"bootstrap_servers": listeners.bootstrap(listener),
                          "security_protocol": listener}
        if listener.endswith("SSL"):
            settings["ssl_context"] = create_ssl_context(cafile=str(listeners.ca.ca_pem))
        if mechanism == "OAUTHBEARER":
            settings.update(sasl_mechanism=mechanism, sasl_oauth_token_provider=_token_provider())
        elif mechanism:
            user, password = user_for(mechanism)
            settings.update(sasl_mechanism=mechanism, sasl_plain_username=user,
                            sasl_plain_password=password)
        producer = AIOKafkaProducer(**settings)
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(topic_name, b"v%d" % i)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic_name, group_id=f"g-{topic_name}",
                                    auto_offset_reset="earliest", **settings)
        await consumer.start()
        got = []
        try:
            async with asyncio.timeout(30):
                async for m in consumer:
                    got.append(m.value)
                    if len(got) == 5:
                        break
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    assert asyncio.run(main()) == [b"v%d" % i for i in range(5)]


# --- kcat ------------------------------------------------------------------------------------

@pytest.mark.skipif(not shutil.which("kcat"), reason="kcat is not installed")
@pytest.mark.parametrize("listener,mechanism", [
    ("SSL", None), ("SASL_SSL", "SCRAM-SHA-256"), ("SASL_PLAINTEXT", "PLAIN"),
    ("SASL_PLAINTEXT", "OAUTHBEARER")])
def test_kcat(secure, topic_name, listener, mechanism):
    listeners, _ = secure
    user, password = user_for(mechanism)
    conf = listeners.confluent(listener, mechanism, user, password)
    args = [f"-X{k}={v}" for k, v in conf.items() if k != "bootstrap.servers"]
    bootstrap = ["-b", str(conf["bootstrap.servers"])]
    produced = subprocess.run(["kcat", *bootstrap, *args, "-P", "-t", topic_name],
                              input=b"one\ntwo\nthree\n", capture_output=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run(["kcat", *bootstrap, *args, "-X", "auto.offset.reset=earliest",
                               "-C", "-e", "-c", "3", "-G", f"g-{topic_name}", topic_name],
                              capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(consumed.stdout.split()) == [b"one", b"three", b"two"]


# --- bad input over raw sockets --------------------------------------------------------------

def handshake(s: KafkaSocket, mechanism: str, correlation_id: int = 1
              ) -> tuple[int, list[str]]:
    r = Reader(s.roundtrip(request(HANDSHAKE, 1, correlation_id, string(mechanism))))
    assert r.i32() == correlation_id
    code = r.i16()
    return code, [r.string() for _ in range(r.i32())]


def authenticate(s: KafkaSocket, token: bytes, correlation_id: int = 2
                 ) -> tuple[int, str | None, bytes | None, int]:
    r = Reader(s.roundtrip(request(AUTHENTICATE, 1, correlation_id, nbytes(token))))
    assert r.i32() == correlation_id
    return r.i16(), r.string(), r.nbytes(), r.i64()


def metadata_v1(correlation_id: int = 3) -> bytes:
    return request(METADATA, 1, correlation_id, (0).to_bytes(4, "big"))  # no topics


def assert_still_serving(listeners) -> None:
    conf = listeners.confluent("SASL_PLAINTEXT", "PLAIN")
    assert AdminClient(conf).list_topics(timeout=30).brokers


def test_wrong_password_fails_and_closes(secure):
    listeners, _ = secure
    with KafkaSocket("127.0.0.1", listeners.sasl_plaintext) as s:
        assert handshake(s, "PLAIN") == (0, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512",
                                             "OAUTHBEARER"])
        code, message, _, _ = authenticate(s, b"\0alice\0wrong")
        assert code == 58 and "Invalid username or password" in message
        assert s.wait_closed()
    with pytest.raises(KafkaException):  # librdkafka reports the failure too
        AdminClient(listeners.confluent("SASL_PLAINTEXT", "PLAIN", "alice", "nope")
                    ).list_topics(timeout=2)
    assert_still_serving(listeners)


def test_unsupported_mechanism_lists_enabled(secure):
    listeners, _ = secure
    with KafkaSocket("127.0.0.1", listeners.sasl_plaintext) as s:
        code, enabled = handshake(s, "GSSAPI")
        assert code == 33 and enabled == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512",
                                          "OAUTHBEARER"]
        assert s.wait_closed()


def test_request_before_authentication_is_never_served(secure):
    listeners, _ = secure
    with KafkaSocket("127.0.0.1", listeners.sasl_plaintext) as s:
        s.send(metadata_v1())
        with pytest.raises(Closed):
            s.recv_frame()
    with KafkaSocket("127.0.0.1", listeners.sasl_plaintext) as s:  # after the handshake
        assert handshake(s, "PLAIN")[0] == 0
        s.send(metadata_v1())
        with pytest.raises(Closed):
            s.recv_frame()
    assert_still_serving(listeners)


def test_oversized_sasl_token_closes(secure):
    listeners, _ = secure
    with KafkaSocket("127.0.0.1", listeners.sasl_plaintext) as s:
        assert handshake(s, "PLAIN")[0] == 0
        s.send((600_000).to_bytes(4, "big") + b"\0" * 1000)  # above 524288
        assert s.wait_closed()
    assert_still_serving(listeners)


def test_bad_scram_and_oauthbearer_messages(secure):
    listeners, _ = secure
    with KafkaSocket("127.0.0.1", listeners.sasl_plaintext) as s:  # malformed client-first
        assert handshake(s, "SCRAM-SHA-256")[0] == 0
        code, message, _, _ = authenticate(s, b"garbage")
        assert code == 58 and message
        assert s.wait_closed()
    with KafkaSocket("127.0.0.1", listeners.sasl_plaintext) as s:  # nonce mismatch
        assert handshake(s, "SCRAM-SHA-256")[0] == 0
        code, _, server_first, _ = authenticate(s, f"n,,n={SCRAM_USER},r=abc".encode())
        assert code == 0 and server_first.startswith(b"r=abc")
        code, message, _, _ = authenticate(s, b"c=biws,r=other,p=" +
                                           base64.b64encode(b"x" * 32), correlation_id=3)
        assert code == 58 and "nonce" in message
        assert s.wait_closed()
    expired = (base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=") + b"." +
               base64.urlsafe_b64encode(json.dumps(
                   {"sub": "erin", "exp": int(time.time()) - 60}).encode()).rstrip(b"=") + b".")
    with KafkaSocket("127.0.0.1", listeners.sasl_plaintext) as s:  # expired token
        assert handshake(s, "OAUTHBEARER")[0] == 0
        code, message, _, _ = authenticate(s, b"n,,\x01auth=Bearer " + expired + b"\x01\x01")
        assert code == 58 and "expired" in message
        assert s.wait_closed()
    assert_still_serving(listeners)


def test_plaintext_bytes_on_tls_port_and_tls_hello_on_plaintext_port(secure):
    listeners, broker = secure
    with KafkaSocket("127.0.0.1", listeners.ssl) as s:  # a Kafka request, no TLS
        s.send(metadata_v1())
        assert s.wait_closed()
    # the operator sees why (asyncio and uvloop log it only in debug mode)
    wait_until(lambda: "TLS handshake failed on listener SSL: WRONG_VERSION_NUMBER"
               in broker.log_text(), 10, what="the handshake failure in the broker log")
    context = ssl.create_default_context(cafile=str(listeners.ca.ca_pem))
    with socket.create_connection(("127.0.0.1", listeners.plaintext), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            with context.wrap_socket(raw, server_hostname="localhost"):
                pass
    conf = listeners.confluent("SSL")
    # Metadata names the endpoint of the listener the client connected to
    brokers = AdminClient(conf).list_topics(timeout=30).brokers
    assert [(b.host, b.port) for b in brokers.values()] == [("127.0.0.1", listeners.ssl)]
    assert AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=30).brokers


def test_mtls_refuses_clients_without_a_trusted_certificate(secure, tmp_path):
    from strom.testing.certs import TestCA

    listeners, broker = secure
    other = TestCA(tmp_path / "other").client("mallory")  # from an untrusted CA
    context = ssl.create_default_context(cafile=str(listeners.ca.ca_pem))
    context.load_cert_chain(str(other.cert), str(other.key))
    for ctx in (ssl.create_default_context(cafile=str(listeners.ca.ca_pem)), context):
        with socket.create_connection(("127.0.0.1", listeners.mtls), timeout=10) as raw:
            with pytest.raises((ssl.SSLError, OSError, Closed)):
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    # TLS 1.3: the server's refusal arrives with the first read
                    tls.sendall(metadata_v1())
                    if not tls.recv(4):
                        raise Closed("closed")
    good = listeners.confluent("MTLS", client_cert=listeners.ca.client("alice"))
    assert AdminClient(good).list_topics(timeout=30).brokers
    wait_until(lambda: "TLS handshake failed on listener MTLS" in broker.log_text(), 10,
               what="the refused certificates in the broker log")


# --- KIP-368 re-authentication ---------------------------------------------------------------

def test_session_lifetime_reauthentication_and_expiry(secure):
    listeners, _ = secure
    with KafkaSocket("127.0.0.1", listeners.reauth) as s:
        assert handshake(s, "PLAIN")[0] == 0
        code, _, _, lifetime = authenticate(s, b"\0alice\0alice-secret")
        assert code == 0 and lifetime == listeners.reauth_ms
        s.roundtrip(metadata_v1(3))
        # re-authenticate as the same user: a new session
        assert handshake(s, "PLAIN", 4)[0] == 0
        code, _, _, lifetime = authenticate(s, b"\0alice\0alice-secret", 5)
        assert code == 0 and lifetime == listeners.reauth_ms
        s.roundtrip(metadata_v1(6))
        time.sleep(listeners.reauth_ms / 1000 + 0.5)
        s.send(metadata_v1(7))  # the session expired: the connection closes
        with pytest.raises(Closed):
            s.recv_frame()
    with KafkaSocket("127.0.0.1", listeners.reauth) as s:  # another principal: refused
        assert handshake(s, "PLAIN")[0] == 0
        assert authenticate(s, b"\0alice\0alice-secret")[0] == 0
        assert handshake(s, "PLAIN", 3)[0] == 0
        code, message, _, _ = authenticate(s, b"\0admin\0admin-secret", 4)
        assert code == 58 and "principal" in message
        assert s.wait_closed()


def test_librdkafka_reauthenticates(secure, topic_name):
    """A consumer that outlives several sessions keeps consuming (librdkafka re-authenticates
    before each session ends)."""
    listeners, broker = secure
    expired_before = broker.log_text().count("did not re-authenticate")
    conf = listeners.confluent("REAUTH", "SCRAM-SHA-512", SCRAM_USER, SCRAM_PASSWORD)
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(30)
    producer = Producer(conf)
    consumer = Consumer({**conf, "group.id": f"g-{topic_name}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic_name])
    got = []
    try:
        for i in range(3):
            producer.produce(topic_name, b"v%d" % i)
            assert producer.flush(20) == 0
            deadline = time.monotonic() + 20
            while len(got) <= i and time.monotonic() < deadline:
                m = consumer.poll(0.5)
                if m is not None and not m.error():
                    got.append(m.value())
            time.sleep(listeners.reauth_ms / 1000)
    finally:
        consumer.close()
    assert got == [b"v%d" % i for i in range(3)]
    # no connection was closed for want of re-authentication
    assert broker.log_text().count("did not re-authenticate") == expired_before
