"""The client side of inter-broker security: how this broker connects to the other brokers'
inter-broker listener (inter.broker.listener.name, or security.inter.broker.protocol), with
that listener's security protocol.

SSL / SASL_SSL: TLS with the listener's `ssl.*` configs (truststore; the keystore's
certificate is shown when the listener asks for client certificates; the host name is
checked unless ssl.endpoint.identification.algorithm is empty). SASL_*: the mechanism of
sasl.mechanism.inter.broker.protocol, with the credentials of the listener's JAAS config for
it, as Kafka: `username` and `password` for PLAIN and SCRAM (the SCRAM user must exist in
/config/users), `unsecuredLoginStringClaim_sub` for unsecured OAUTHBEARER.
"""

from __future__ import annotations

import ssl

from strom.config import BrokerConfig, ConfigError
from strom.protocol.client import BrokerConnection, BrokerConnectionError, ClientSecurity
from strom.protocol.errors import ErrorCode
from strom.protocol.messages import make, request_schema
from strom.security import oauthbearer, plain, scram, tls
from strom.security.listener import jaas_options

HANDSHAKE_VERSION, AUTHENTICATE_VERSION = 1, 2


def client_security(config: BrokerConfig) -> ClientSecurity | None:
    """None for a PLAINTEXT inter-broker listener; raises ConfigError."""
    listener = config.inter_broker_listener()
    protocol = config.security_protocol(listener)
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = tls.client_context(lambda key: config.for_listener(listener, key))
    authenticate = None
    if protocol.startswith("SASL_"):
        mechanism = config.get("sasl.mechanism.inter.broker.protocol").upper()
        options = jaas_options(config, listener, mechanism)
        authenticate = _authenticator(mechanism, options, listener)
    return ClientSecurity(context, authenticate)


def tool_security(props: dict[str, object]) -> ClientSecurity | None:
    """How a command-line tool's own requests (those confluent-kafka has no call for)
    reach a secured listener, from the client properties it gives confluent-kafka
    (`--command-config`, librdkafka's names): `security.protocol`, `sasl.mechanism(s)`,
    `sasl.username` / `sasl.password`, `sasl.oauthbearer.config` (`principal=...`, an
    unsecured token as librdkafka makes), `ssl.ca.location`, `ssl.certificate.location`,
    `ssl.key.location` / `ssl.key.password`, `ssl.endpoint.identification.algorithm`,
    `enable.ssl.certificate.verification`. None for PLAINTEXT; raises ConfigError."""
    protocol = str(props.get("security.protocol", "plaintext")).upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol not in ("SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigError(f"Unknown security.protocol {protocol}")
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ca = props.get("ssl.ca.location")
            if ca:
                context.load_verify_locations(cafile=str(ca))
            else:
                context.load_default_certs()
            cert = props.get("ssl.certificate.location")
            if cert:
                key_password = props.get("ssl.key.password")
                context.load_cert_chain(str(cert), str(props.get("ssl.key.location") or cert),
                                        str(key_password) if key_password else None)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"Cannot load the client's TLS files: {e}") from None
        verify = str(props.get("enable.ssl.certificate.verification", "true")).lower()
        if verify == "false":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:  # librdkafka checks the host name by default ("https")
            context.check_hostname = str(
                props.get("ssl.endpoint.identification.algorithm", "https")).lower() == "https"
    authenticate = None
    if protocol.startswith("SASL_"):
        mechanism = str(props.get("sasl.mechanism", props.get("sasl.mechanisms", "GSSAPI")))
        mechanism = mechanism.upper()
        options = {"username": props.get("sasl.username"),
                   "password": props.get("sasl.password")}
        if mechanism == "OAUTHBEARER":
            config = str(props.get("sasl.oauthbearer.config", ""))
            claims = dict(kv.split("=", 1) for kv in config.split() if "=" in kv)
            options = {"unsecuredLoginStringClaim_sub": claims.get("principal")}
        authenticate = _authenticator(mechanism, {k: str(v) for k, v in options.items()
                                                  if v is not None}, "the tool's")
    return ClientSecurity(context, authenticate)


def _authenticator(mechanism: str, options: dict[str, str], listener: str):
    if mechanism == "OAUTHBEARER":
        subject = options.get("unsecuredLoginStringClaim_sub")
        if not subject:
            raise ConfigError(f"Inter-broker OAUTHBEARER on listener {listener} needs "
                              "unsecuredLoginStringClaim_sub in its sasl.jaas.config")

        async def oauth(conn: BrokerConnection) -> None:
            token = oauthbearer.unsecured_token(subject)
            await _exchange(conn, mechanism, [oauthbearer.client_message(token)])

        return oauth
    user, password = options.get("username"), options.get("password")
    if mechanism not in ("PLAIN", *scram.HASHES):
        raise ConfigError(f"sasl.mechanism.inter.broker.protocol={mechanism} is not served "
                          "(PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)")
    if not user or password is None:
        raise ConfigError(f"Inter-broker {mechanism} on listener {listener} needs username "
                          f"and password in listener.name.{listener.lower()}."
                          f"{mechanism.lower()}.sasl.jaas.config")
    if mechanism == "PLAIN":
        async def plain_login(conn: BrokerConnection) -> None:
            await _exchange(conn, mechanism, [plain.client_token(user, password)])

        return plain_login

    async def scram_login(conn: BrokerConnection) -> None:
        client = scram.ScramClient(mechanism, user, password)
        await _handshake(conn, mechanism)
        server_first = await _authenticate(conn, client.first())
        server_final = await _authenticate(conn, client.final(server_first))
        client.verify(server_final)

    return scram_login


async def _handshake(conn: BrokerConnection, mechanism: str) -> None:
    response = await conn.authentication_request(make(
        request_schema(17, HANDSHAKE_VERSION), mechanism=mechanism))
    if response.error_code != ErrorCode.none:
        raise BrokerConnectionError(
            f"{conn.where} does not serve SASL mechanism {mechanism} "
            f"({response.error_code.name}; enabled: {', '.join(response.mechanisms)})")


async def _authenticate(conn: BrokerConnection, token: bytes) -> bytes:
    response = await conn.authentication_request(make(
        request_schema(36, AUTHENTICATE_VERSION), auth_bytes=token))
    if response.error_code != ErrorCode.none:
        raise BrokerConnectionError(f"SASL authentication to {conn.where} failed: "
                                    f"{response.error_message or response.error_code.name}")
    lifetime = response.session_lifetime
    conn.session_started(int(lifetime.total_seconds() * 1000) if lifetime else 0)
    return response.auth_bytes


async def _exchange(conn: BrokerConnection, mechanism: str, tokens: list[bytes]) -> None:
    await _handshake(conn, mechanism)
    for token in tokens:
        await _authenticate(conn, token)
