"""A throwaway certificate authority for the secured local broker: a CA, the broker's
certificate (for 127.0.0.1 and localhost) and client certificates whose subject `CN=<name>` is
the client's principal. Generated on this machine with `cryptography` (no network), written with
mode 0600 into a 0700 directory; nothing here is ever committed or logged."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=30)


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by the owner only (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8, unencrypted: what Kafka's PEM key store and Python's ssl module both read.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str = "itsm-localstack-ca") -> Authority:
        key = _key()
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(self, common_name: str, *, server: bool) -> tuple[bytes, bytes]:
        """(certificate PEM, private key PEM) for `CN=common_name`; a server certificate is
        valid for 127.0.0.1 and localhost (and for client authentication, as the broker also
        connects to itself)."""
        key = _key()
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _cert_pem(cert), _key_pem(key)

    @property
    def cert_pem(self) -> bytes:
        return _cert_pem(self.cert)


@dataclass(frozen=True)
class ClientFiles:
    """A client's certificate and key files (PEM)."""

    certfile: Path
    keyfile: Path


def write_authority(directory: Path, broker: str, clients: list[str]) -> dict[str, ClientFiles]:
    """Create a CA in `directory` (`ca.crt`), the broker's key store (`<broker>.keystore.pem`:
    key, certificate, CA) and a certificate and key per client (`<name>.crt`, `<name>.key`).
    The CA's key is not kept: nothing more can be signed with it."""
    ca = Authority.create()
    write_private(directory / "ca.crt", ca.cert_pem)
    cert, key = ca.issue(broker, server=True)
    write_private(directory / f"{broker}.keystore.pem", key + cert + ca.cert_pem)
    files = {}
    for name in clients:
        cert, key = ca.issue(name, server=False)
        files[name] = ClientFiles(directory / f"{name}.crt", directory / f"{name}.key")
        write_private(files[name].certfile, cert + ca.cert_pem)
        write_private(files[name].keyfile, key)
    return files
