"""X.509 building blocks of the private CAs made here: `kube_real.Pki` (the control plane of
`--kube real`), `alspki` (the ALS port of `lazyload up --secure`) and the test kit's throw-away
certificates (`lazyload_testing.certificates`).

EC P-256 keys, SHA-256 signatures, PEM without a passphrase; every certificate is valid from five
minutes ago (clocks drift) for `lifetime`. Its users import it lazily, so that `cryptography` is
loaded only by the commands that issue certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey
Issued = tuple[Key, x509.Certificate]
BACKDATE = datetime.timedelta(minutes=5)


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name(attributes)


def general_name(value: str) -> x509.GeneralName:
    """An IP address SAN for an address, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: Key, lifetime: datetime.timedelta
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + lifetime)
    )


def certificate_authority(
    common_name: str, *, lifetime: datetime.timedelta, path_length: int | None = None
) -> Issued:
    """A self-signed CA (key usage: certificate and CRL signing) and its key."""
    key = new_key()
    subject = name(common_name)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        _builder(subject, subject, key, lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def leaf(
    subject: x509.Name,
    ca: Issued,
    *,
    lifetime: datetime.timedelta,
    server: bool,
    sans: Sequence[x509.GeneralName] = (),
) -> Issued:
    """A server (`server`) or client certificate signed by `ca`, with `sans` if any, and its key."""
    ca_key, ca_cert = ca
    key = new_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(subject, ca_cert.subject, key, lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Any) -> bytes:
    """A private key (EC or RSA) as unencrypted PKCS#8 PEM."""
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
