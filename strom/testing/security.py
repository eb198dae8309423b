"""A broker with every kind of listener, for security tests and the security benchmark.

    listeners = SecureListeners.make(certs_dir, plaintext_port=broker.port)
    broker = BrokerProcess(overrides=listeners.overrides(), port=listeners.plaintext)

Listeners: PLAINTEXT (the harness waits for it), SSL (one-way; client certificates
requested), MTLS (SSL with ssl.client.auth=required and a principal mapping rule),
SASL_PLAINTEXT and SASL_SSL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER), and
REAUTH (SASL_PLAINTEXT whose sessions last `reauth_ms`). PLAIN users: PLAIN_USERS. SCRAM
users must be created (`strom configs --entity-type users`); OAUTHBEARER takes unsecured
tokens. `confluent(listener, ...)` gives a confluent-kafka/librdkafka config for a listener.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from strom.testing.certs import Keypair, TestCA
from strom.testing.processes import HOST, free_port

PLAIN_USERS = {"admin": "admin-secret", "alice": "alice-secret"}
MECHANISMS = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER"


def plain_jaas(users: dict[str, str], login: str = "admin") -> str:
    options = " ".join(f'user_{u}="{p}"' for u, p in users.items())
    return ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{login}" password="{users[login]}" {options};')


@dataclass
class SecureListeners:
    ca: TestCA
    server: Keypair
    plaintext: int
    ssl: int
    mtls: int
    sasl_plaintext: int
    sasl_ssl: int
    reauth: int
    reauth_ms: int = 1500

    @classmethod
    def make(cls, directory: Path, plaintext_port: int | None = None) -> SecureListeners:
        ca = TestCA(directory)
        return cls(ca, ca.server(), plaintext_port or free_port(), free_port(), free_port(),
                   free_port(), free_port(), free_port())

    def port(self, listener: str) -> int:
        return getattr(self, listener.lower())

    def overrides(self, inter_broker: str = "PLAINTEXT") -> dict[str, str]:
        jaas = plain_jaas(PLAIN_USERS)
        out = {
            "listeners": ",".join(f"{name}://{HOST}:{self.port(name)}" for name in (
                "PLAINTEXT", "SSL", "MTLS", "SASL_PLAINTEXT", "SASL_SSL", "REAUTH")),
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SSL:SSL,MTLS:SSL,"
                                              "SASL_PLAINTEXT:SASL_PLAINTEXT,"
                                              "SASL_SSL:SASL_SSL,REAUTH:SASL_PLAINTEXT",
            "inter.broker.listener.name": inter_broker,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.server.pem),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca.ca_pem),
            "ssl.client.auth": "requested",
            "listener.name.mtls.ssl.client.auth": "required",
            "listener.name.mtls.ssl.principal.mapping.rules":
                "RULE:^CN=([^,]+),OU=test,.*$/$1/L,DEFAULT",
            "sasl.enabled.mechanisms": MECHANISMS,
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.reauth.connections.max.reauth.ms": str(self.reauth_ms),
        }
        for listener in ("sasl_plaintext", "sasl_ssl", "reauth"):
            out[f"listener.name.{listener}.plain.sasl.jaas.config"] = jaas
        return out

    def bootstrap(self, listener: str) -> str:
        return f"{HOST}:{self.port(listener)}"

    def confluent(self, listener: str, mechanism: str | None = None, user: str = "alice",
                  password: str | None = None, client_cert: Keypair | None = None
                  ) -> dict[str, object]:
        """librdkafka settings for one listener (and SASL mechanism)."""
        protocol = {"MTLS": "SSL", "REAUTH": "SASL_PLAINTEXT"}.get(listener, listener)
        conf: dict[str, object] = {"bootstrap.servers": self.bootstrap(listener),
                                   "security.protocol": protocol}
        if protocol.endswith("SSL"):
            conf["ssl.ca.location"] = str(self.ca.ca_pem)
        if client_cert is not None:
            conf["ssl.certificate.location"] = str(client_cert.cert)
            conf["ssl.key.location"] = str(client_cert.key)
        if mechanism == "OAUTHBEARER":
            conf.update({"sasl.mechanism": mechanism,
                         "enable.sasl.oauthbearer.unsecure.jwt": True,
                         "sasl.oauthbearer.config": f"principal={user}"})
        elif mechanism is not None:
            conf.update({"sasl.mechanism": mechanism, "sasl.username": user,
                         "sasl.password": password if password is not None
                         else PLAIN_USERS.get(user, f"{user}-secret")})
        return conf
