"""What one listener asks of its connections, built once from the broker's config at
start-up: its security protocol, its TLS context (SSL, SASL_SSL), the SASL mechanisms it
serves (sasl.enabled.mechanisms, each with the listener's JAAS options) and the limits of
a SASL session."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from strom.config import BrokerConfig, ConfigError
from strom.security import jaas, jwks, oauthbearer, plain, scram, tls
from strom.security.credentials import ScramCredentials
from strom.security.mechanism import SaslServer

SERVED_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


@dataclass(slots=True)
class ListenerSecurity:
    name: str
    protocol: str  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    ssl_context: ssl.SSLContext | None = None
    mapper: tls.PrincipalMapper | None = None
    mechanisms: dict[str, Callable[[], SaslServer]] = field(default_factory=dict)
    reauth_ms: int = 0
    max_receive_size: int = 524288
    failed_delay_ms: int = 100  # connection.failed.authentication.delay.ms

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")


def jaas_options(config: BrokerConfig, listener: str, mechanism: str) -> dict[str, str]:
    """The JAAS options of a mechanism on a listener ({} when none is configured)."""
    text = config.for_listener(listener, "sasl.jaas.config", mechanism)
    return jaas.parse_options(text) if text else {}


def listener_security(config: BrokerConfig, listener: str,
                      credentials: ScramCredentials) -> ListenerSecurity:
    """Raises ConfigError when the listener's configuration cannot work."""
    protocol = config.security_protocol(listener)
    out = ListenerSecurity(listener, protocol,
                           reauth_ms=config.for_listener(listener, "connections.max.reauth.ms"),
                           max_receive_size=config.get("sasl.server.max.receive.size"),
                           failed_delay_ms=config.get(
                               "connection.failed.authentication.delay.ms"))

    def get(key: str):
        return config.for_listener(listener, key)

    if protocol in ("SSL", "SASL_SSL"):
        out.ssl_context = tls.server_context(get, listener)
        out.mapper = tls.PrincipalMapper(get("ssl.principal.mapping.rules"))
    if not out.sasl:
        return out
    enabled = config.for_listener(listener, "sasl.enabled.mechanisms")
    for mechanism in enabled:
        mechanism = mechanism.upper()
        if mechanism not in SERVED_MECHANISMS:
            raise ConfigError(f"SASL mechanism {mechanism} of listener {listener} is not "
                              f"served (strom serves {', '.join(SERVED_MECHANISMS)}): set "
                              "sasl.enabled.mechanisms")
        options = jaas_options(config, listener, mechanism)
        if mechanism == "PLAIN":
            users = plain.users_from_jaas(options)
            if not users:
                raise ConfigError(f"SASL/PLAIN on listener {listener} needs users: set "
                                  f"listener.name.{listener.lower()}.plain.sasl.jaas.config "
                                  "with user_<name>=\"<password>\" options")
            out.mechanisms[mechanism] = lambda users=users: plain.PlainServer(users)
        elif mechanism in scram.HASHES:
            out.mechanisms[mechanism] = lambda m=mechanism: scram.ScramServer(
                m, credentials.lookup)
        elif config.for_listener(listener, "sasl.oauthbearer.jwks.endpoint.url",
                                 mechanism):
            validator = jwks.JwksValidator(
                lambda key, m=mechanism: config.for_listener(listener, key, m))
            out.mechanisms[mechanism] = lambda v=validator: oauthbearer.OAuthBearerServer(v)
        else:
            validator = oauthbearer.UnsecuredValidator(options)
            out.mechanisms[mechanism] = lambda v=validator: oauthbearer.OAuthBearerServer(v)
    if not out.mechanisms:
        raise ConfigError(f"Listener {listener} is {protocol} but sasl.enabled.mechanisms "
                          "is empty")
    return out
