"""A test certificate authority, made with `cryptography` in a directory of the caller's:
the CA, a broker certificate for 127.0.0.1 / localhost, and client certificates, as PEM
files (and PKCS12 keystores when asked), so TLS tests need no tool outside Python.

    certs = TestCA(tmp_path)
    certs.ca_pem                  # truststore for clients and brokers
    certs.server()                # Keypair(cert, key, pem) for the broker
    certs.client("alice")         # CN=alice,OU=test,O=strom client certificate
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Keypair:
    cert: Path  # the certificate (PEM)
    key: Path  # its private key (PEM, unencrypted)
    pem: Path  # key and certificate in one file (a PEM keystore)


def _name(cn: str, ou: str = "test") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "strom"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "strom-test-ca") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._subject = _name(name, "ca")
        self._cert = (x509.CertificateBuilder().subject_name(self._subject)
                      .issuer_name(self._subject).public_key(self._key.public_key())
                      .serial_number(x509.random_serial_number())
                      .not_valid_before(now - datetime.timedelta(days=1))
                      .not_valid_after(now + datetime.timedelta(days=30))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                      .sign(self._key, hashes.SHA256()))
        self.ca_pem = self.dir / f"{name}.pem"
        self.ca_pem.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def _issue(self, file_name: str, subject: x509.Name, server: bool, days: int = 30
               ) -> tuple[Keypair, ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(self._subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=days)))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        pair = Keypair(self.dir / f"{file_name}.crt", self.dir / f"{file_name}.key",
                       self.dir / f"{file_name}.pem")
        pair.cert.write_bytes(cert_pem)
        pair.key.write_bytes(key_pem)
        pair.pem.write_bytes(key_pem + cert_pem)
        return pair, key, cert

    def server(self, name: str = "broker") -> Keypair:
        return self._issue(name, _name("localhost", "broker"), server=True)[0]

    def client(self, cn: str) -> Keypair:
        return self._issue(f"client-{cn}", _name(cn), server=False)[0]

    def server_pkcs12(self, password: str, name: str = "broker") -> Path:
        """A PKCS12 keystore with the broker's key and certificate."""
        _, key, cert = self._issue(name + "-p12", _name("localhost", "broker"), server=True)
        path = self.dir / f"{name}.p12"
        path.write_bytes(pkcs12.serialize_key_and_certificates(
            name.encode(), key, cert, [self._cert],
            serialization.BestAvailableEncryption(password.encode())))
        return path
