"""The sandbox's private test CA and the certificates of its "external provider".

The sandbox's Postfix and Dovecot stand in for someone else's mail server (Gmail,
Microsoft 365, a mailcow box) that mailforge connects to over TLS, verifying the
certificate. So the sandbox makes its own CA (trusted only by whoever is given
``ca.pem``: the tests, the sandbox daemon's ``connected.ca_file``), a server certificate
it signs, and a second certificate signed by another CA that nobody is given (the
"bad TLS" listeners, where verification must fail).

The files live in ``<sandbox>/tls/`` and are made once: :func:`ensure` keeps them
while they exist, cover the wanted names and are not close to expiry, so ``up()``
again changes nothing (Postfix and Dovecot keep serving the same certificate, and a
client that pinned ``ca.pem`` keeps trusting it). Keys are EC P-256 (fast to make; every
TLS client mailforge meets accepts it).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import atomic

CA_DAYS = 3650
LEAF_DAYS = 825
# A certificate with less than this left is made again (with the same CA).
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path        # the test CA: trust this (and only this) to talk to the sandbox
    cert_file: Path      # server certificate signed by the test CA
    key_file: Path
    bad_cert_file: Path  # the same names, signed by a CA nobody is given
    bad_key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailforge sandbox"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA with the extensions strict verifiers (OpenSSL's X509_STRICT,
    Python 3.13's default context) require: critical basicConstraints and keyUsage,
    subject and authority key identifiers."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
              dns_names: Sequence[str], ips: Sequence[str],
              ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A server certificate for *dns_names* and *ips* (subjectAltName: what hostname
    verification checks; the common name is ignored by modern clients)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(_name(dns_names[0] if dns_names else ips[0]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _current(path: Path, key_path: Path, dns_names: Sequence[str], ips: Sequence[str],
             issuer: x509.Certificate | None) -> bool:
    """Does the certificate at *path* (with its key) still serve: issued by *issuer*
    (when given), covering every wanted name, and not close to expiry?"""
    cert = _load_cert(path)
    if cert is None or not key_path.exists():
        return False
    if issuer is not None and cert.issuer != issuer.subject:
        return False
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    return set(dns_names) <= have_dns and set(ips) <= have_ips


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate,
                key: ec.EllipticCurvePrivateKey) -> None:
    # Key first: a certificate is never on disk without the key that goes with it.
    atomic.write_bytes(key_path, _key_pem(key), mode=0o600)
    atomic.write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def ensure(directory: Path, dns_names: Sequence[str], ips: Sequence[str]) -> TlsFiles:
    """Make (or keep) the test CA and both server certificates in *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(ca_file=directory / "ca.pem", cert_file=directory / "server.pem",
                     key_file=directory / "server.key", bad_cert_file=directory / "bad.pem",
                     bad_key_file=directory / "bad.key")
    ca_key_file = directory / "ca.key"
    ca = _load_cert(files.ca_file)
    ca_key: ec.EllipticCurvePrivateKey | None = None
    if ca is not None and ca_key_file.exists():
        loaded = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
        if isinstance(loaded, ec.EllipticCurvePrivateKey) and \
                ca.not_valid_after_utc - _now() > datetime.timedelta(days=LEAF_DAYS):
            ca_key = loaded
    if ca is None or ca_key is None:
        ca, ca_key = make_ca("mailforge sandbox test CA")
        _write_pair(files.ca_file, ca_key_file, ca, ca_key)
    if not _current(files.cert_file, files.key_file, dns_names, ips, ca):
        _write_pair(files.cert_file, files.key_file, *make_leaf(ca, ca_key, dns_names, ips))
    if not _current(files.bad_cert_file, files.bad_key_file, dns_names, ips, None):
        # The other CA's key is thrown away at once: nothing it signed may ever be trusted.
        other, other_key = make_ca("untrusted CA (mailforge sandbox bad-TLS listeners)")
        _write_pair(files.bad_cert_file, files.bad_key_file,
                    *make_leaf(other, other_key, dns_names, ips))
    return files
