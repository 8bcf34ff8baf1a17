"""The private CA of `lazyload up --secure`: mutual TLS on accesslog-ingest's ALS port.

`issue(directory, host)` writes a CA, accesslog-ingest's server certificate (DNS name
`accesslog-ingest`, which the global-sidecar checks, plus `host` and localhost) and the
global-sidecar's client certificate (CN `global-sidecar`, SPIFFE-style URI of its ServiceAccount),
each signed by the CA; keys are mode 0600 and the CA key is not kept (nothing else is ever
signed). A new CA every run: `endpoints.json` names the files (`als_tls`).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVER_NAME = "accesslog-ingest"
CLIENT_IDENTITY = "spiffe://cluster.local/ns/mesh-operator/sa/global-sidecar"


@dataclass(frozen=True)
class AlsPki:
    """PEM file paths of `issue`."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def endpoints(self) -> dict[str, str]:
        """`endpoints.json`'s `als_tls`: what a client of the ALS port needs."""
        return {
            "ca_file": str(self.ca.resolve()),
            "client_cert_file": str(self.client_cert.resolve()),
            "client_key_file": str(self.client_key.resolve()),
            "server_name": SERVER_NAME,
        }


def issue(directory: Path, host: str) -> AlsPki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def builder(subject: str, issuer: x509.Name, key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        builder("lazyload ALS CA", name("lazyload ALS CA"), ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: Any, sans: list[x509.GeneralName]) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            builder(cn, ca.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return key, cert

    server_sans: list[x509.GeneralName] = [x509.DNSName(SERVER_NAME), x509.DNSName("localhost")]
    for address in {host, "127.0.0.1"}:
        try:
            server_sans.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            server_sans.append(x509.DNSName(address))
    server = leaf(SERVER_NAME, ExtendedKeyUsageOID.SERVER_AUTH, server_sans)
    client = leaf(
        "global-sidecar",
        ExtendedKeyUsageOID.CLIENT_AUTH,
        [x509.UniformResourceIdentifier(CLIENT_IDENTITY)],
    )

    def write(file: str, data: bytes, mode: int) -> Path:
        path = directory / file
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def key_pem(key: Any) -> bytes:
        return bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    pem = serialization.Encoding.PEM
    return AlsPki(
        ca=write("ca.pem", ca.public_bytes(pem), 0o644),
        server_cert=write("ingest.pem", server[1].public_bytes(pem), 0o644),
        server_key=write("ingest-key.pem", key_pem(server[0]), 0o600),
        client_cert=write("global-sidecar.pem", client[1].public_bytes(pem), 0o644),
        client_key=write("global-sidecar-key.pem", key_pem(client[0]), 0o600),
    )
