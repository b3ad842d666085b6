"""A throw-away PKI for the simulators: a CA and a loopback server certificate it signs.

Keys are derived from the seed, serial numbers and validity are fixed, so the same seed gives the
same keys and names (ECDSA signatures themselves are randomised by the library). A second,
unrelated "rogue" PKI lets tests check that the gateway refuses a server its CA did not sign.
Client certificates (`make_client_cert`) and a server context that demands one serve the
mutual TLS of OICP.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOT_BEFORE = datetime(2020, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)
# The order of the P-256 group: private scalars must lie in [1, n - 1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True, slots=True)
class Pki:
    """Where the PEM files are: the CA certificate (trust this), the server certificate and key."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path

    def server_ssl_context(self) -> ssl.SSLContext:
        """A TLS >= 1.2 server context presenting the server certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.server_cert, self.server_key)
        return ctx

    def mutual_tls_server_context(self, client_ca: Path | None = None) -> ssl.SSLContext:
        """The server context, also demanding a client certificate signed by `client_ca` (default:
        this PKI's CA); a client without one fails the handshake."""
        ctx = self.server_ssl_context()
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(client_ca or self.ca_cert))
        return ctx

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying TLS >= 1.2 client context that trusts only this CA (for tests and tools)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_cert))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


def _derive_key(seed: int, label: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key determined by (seed, label)."""
    digest = hashlib.sha256(f"evgate-sim:{seed}:{label}".encode()).digest()
    scalar = int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _serial(seed: int, label: str) -> int:
    """A fixed, positive 63-bit serial number for (seed, label)."""
    digest = hashlib.sha256(f"evgate-sim-serial:{seed}:{label}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1 or 1


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evgate simulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    """Signatures for both; certificate and CRL signing for the CA only."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write a PEM file; keys are readable by the owner only."""
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _leaf(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    serial: int,
    ca_name: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    san: x509.SubjectAlternativeName | None = None,
) -> x509.Certificate:
    """An end-entity certificate for `usage` (server or client authentication) signed by the CA."""
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return (
        builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _build(seed: int, directory: Path, label: str) -> Pki:
    """Generate the CA and server certificate for `label` and write them into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _derive_key(seed, f"{label}-ca")
    server_key = _derive_key(seed, f"{label}-server")
    ca_name = _name(f"evgate simulator {label} CA {seed}")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(_serial(seed, f"{label}-ca"))
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_cert = _leaf(
        "localhost",
        server_key,
        _serial(seed, f"{label}-server"),
        ca_name,
        ca_key,
        ExtendedKeyUsageOID.SERVER_AUTH,
        x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
    )
    pki = Pki(directory, directory / "ca.pem", directory / "server.pem", directory / "server.key")
    _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    _write(pki.server_key, _key_pem(server_key), private=True)
    return pki


def make_pki(seed: int, directory: Path) -> Pki:
    """The simulators' CA and a server certificate for 127.0.0.1 and localhost, in `directory`."""
    return _build(seed, Path(directory), "main")


def make_rogue_pki(seed: int, directory: Path) -> Pki:
    """An unrelated CA and server certificate with the same names: a server nobody should trust."""
    return _build(seed, Path(directory), "rogue")


def make_client_cert(pki: Pki, seed: int, name: str) -> tuple[Path, Path]:
    """A client certificate (CN `name`, clientAuth) signed by `pki`'s CA, written next to it as
    `client-<name>.pem` and `.key` (owner-only). `seed` must be the one `pki` was made with: the
    CA key is derived again from it, as it is never written to disk."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = next(
        (
            key
            for key in (_derive_key(seed, f"{label}-ca") for label in ("main", "rogue"))
            if key.public_key() == ca_cert.public_key()
        ),
        None,
    )
    if ca_key is None:
        raise ValueError(f"{pki.ca_cert} was not made with seed {seed}")
    key = _derive_key(seed, f"client:{ca_cert.subject.rfc4514_string()}:{name}")
    cert = _leaf(name, key, _serial(seed, f"client:{name}"), ca_cert.subject, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "client"
    cert_path, key_path = pki.directory / f"client-{slug}.pem", pki.directory / f"client-{slug}.key"
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _write(key_path, _key_pem(key), private=True)
    return cert_path, key_path
