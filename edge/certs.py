"""TLS certificates for the QUIC edge.

Browsers accept a self-signed certificate for WebTransport only through
``serverCertificateHashes``, and only when it is ECDSA (P-256 here) and valid
for at most 14 days (Chrome's rule). ``make_dev_cert`` makes such a
certificate; ``liveroom serve --dev`` keeps one in the data directory and
makes a new one when it has less than a day left. In production the edge
takes a certificate and key from a real CA (``--quic-cert``, ``--quic-key``)
and browsers need no hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Chrome refuses serverCertificateHashes for certificates valid longer than
# 14 days; 10 leaves room for clock skew.
DEV_CERT_DAYS = 10
DEV_CERT_NAME = "quic-cert.pem"
DEV_KEY_NAME = "quic-key.pem"


@dataclass(frozen=True, slots=True)
class CertInfo:
    cert: Path
    key: Path
    sha256: str  # hex SHA-256 of the DER certificate, as serverCertificateHashes wants
    not_after: dt.datetime


def cert_info(cert: Path, key: Path) -> CertInfo:
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    der = c.public_bytes(serialization.Encoding.DER)
    return CertInfo(cert, key, hashlib.sha256(der).hexdigest(), c.not_valid_after_utc)


def make_dev_cert(directory: Path, hosts: list[str], now: dt.datetime,
                  days: int = DEV_CERT_DAYS) -> CertInfo:
    """A self-signed ECDSA P-256 certificate for ``hosts`` (names or IP
    addresses), valid from an hour before ``now`` for ``days`` days."""
    if not 0 < days <= 14:
        raise ValueError("browsers accept certificate hashes only for <= 14 days")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "liveroom")])
    alt: list[x509.GeneralName] = []
    for h in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    # not_before an hour back: a client clock slightly behind still accepts
    # it; the whole span (not_after - not_before) stays within `days`.
    start = now - dt.timedelta(hours=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / DEV_CERT_NAME, directory / DEV_KEY_NAME
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_info(cert_path, key_path)


def dev_cert(directory: Path, hosts: list[str], now: dt.datetime) -> CertInfo:
    """The development certificate kept in ``directory``, made anew when it
    is missing or has less than a day left."""
    cert_path, key_path = directory / DEV_CERT_NAME, directory / DEV_KEY_NAME
    if cert_path.is_file() and key_path.is_file():
        info = cert_info(cert_path, key_path)
        if info.not_after - now > dt.timedelta(days=1):
            return info
    return make_dev_cert(directory, hosts, now)
