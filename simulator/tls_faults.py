"""Server TLS contexts for the certificate and protocol faults of a simulated operator.

Each fault changes exactly one thing about the handshake, so a client's refusal can be pinned on
that one thing: an expired certificate or one naming another host (both signed by the simulation's
own CA), a self-signed certificate, a certificate from an unrelated CA, or the normal certificate
offered over TLS 1.0/1.1 only. Keys and certificates are derived from the simulation's seed like
`simulator.tls`, and written under `<pki directory>/faults/<kind>/`.
"""

from __future__ import annotations

import ipaddress
import ssl
import warnings
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from simulator.tls import (
    NOT_AFTER,
    NOT_BEFORE,
    Pki,
    _derive_key,
    _key_usage,
    _name,
    _serial,
    _write,
    make_pki,
    make_rogue_pki,
)

TLS_KINDS = ("tls_expired", "tls_self_signed", "tls_wrong_host", "tls_untrusted", "tls_legacy")
WRONG_HOST = "charge.wrong-host.invalid"  # the only name the tls_wrong_host certificate is valid for
EXPIRED_NOT_BEFORE = datetime(2020, 1, 1, tzinfo=UTC)
EXPIRED_NOT_AFTER = datetime(2021, 1, 1, tzinfo=UTC)
_LOOPBACK = (x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"))


def _leaf(
    seed: int,
    kind: str,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    issuer_name: x509.Name | None,
    names: tuple[x509.GeneralName, ...],
    not_before: datetime = NOT_BEFORE,
    not_after: datetime = NOT_AFTER,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for `names`, signed by the issuer, or by itself when there is none."""
    key = _derive_key(seed, f"fault-{kind}")
    subject = _name("localhost")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name or subject)
        .public_key(key.public_key())
        .serial_number(_serial(seed, f"fault-{kind}"))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer_key is not None:
        ski = x509.SubjectKeyIdentifier.from_public_key(issuer_key.public_key())
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    return builder.sign(issuer_key or key, hashes.SHA256()), key


class TlsFaults:
    """Builds (once, then caches) the server SSL context of each TLS fault kind for one seed."""

    def __init__(self, seed: int, directory: Path) -> None:
        self.seed = seed
        self.directory = Path(directory)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._pki: Pki | None = None

    def _main(self) -> Pki:
        """The simulation's PKI (re-created only when the directory has none yet)."""
        if self._pki is None:
            d = self.directory
            if (d / "ca.pem").exists() and (d / "server.pem").exists() and (d / "server.key").exists():
                self._pki = Pki(d, d / "ca.pem", d / "server.pem", d / "server.key")
            else:
                self._pki = make_pki(self.seed, d)
        return self._pki

    def _main_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
        """The simulation CA's key (re-derived from the seed) and name, checked against ca.pem."""
        key = _derive_key(self.seed, "main-ca")
        ca = x509.load_pem_x509_certificate(self._main().ca_cert.read_bytes())
        if ca.public_key() != key.public_key():
            raise ValueError(f"{self._main().ca_cert} was not made from seed {self.seed}")
        return key, ca.subject

    def _write_pair(self, kind: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        where = self.directory / "faults" / kind
        where.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = where / "server.pem", where / "server.key"
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write(key_path, key_pem, private=True)
        return cert_path, key_path

    def context(self, kind: str) -> ssl.SSLContext:
        """The server context that produces fault `kind` (one of TLS_KINDS)."""
        if kind not in self._contexts:
            self._contexts[kind] = self._build(kind)
        return self._contexts[kind]

    def _build(self, kind: str) -> ssl.SSLContext:
        if kind == "tls_untrusted":
            return make_rogue_pki(self.seed, self.directory / "faults" / "untrusted").server_ssl_context()
        if kind == "tls_legacy":
            return legacy_server_context(self._main())
        if kind == "tls_self_signed":
            cert, key = _leaf(self.seed, kind, None, None, _LOOPBACK)
        elif kind == "tls_expired":
            ca_key, ca_name = self._main_ca()
            cert, key = _leaf(self.seed, kind, ca_key, ca_name, _LOOPBACK, EXPIRED_NOT_BEFORE, EXPIRED_NOT_AFTER)
        elif kind == "tls_wrong_host":
            ca_key, ca_name = self._main_ca()
            cert, key = _leaf(self.seed, kind, ca_key, ca_name, (x509.DNSName(WRONG_HOST),))
        else:
            raise ValueError(f"unknown TLS fault {kind!r} (known: {', '.join(TLS_KINDS)})")
        cert_path, key_path = self._write_pair(kind, cert, key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_path, key_path)
        return ctx


def legacy_server_context(pki: Pki) -> ssl.SSLContext:
    """The normal certificate, but TLS 1.0 and 1.1 only (OpenSSL 3 needs security level 0 for them).

    Note: asyncio servers do not flush the `protocol_version` alert when the handshake fails, so a
    TLS >= 1.2 client sees the connection reset (or an EOF), not an alert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():  # the TLSVersion members themselves are deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    return ctx


def legacy_client_context(ca_cert: Path) -> ssl.SSLContext:
    """A verifying client that still speaks TLS 1.0/1.1: proves the legacy server is what it claims."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca_cert)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx
