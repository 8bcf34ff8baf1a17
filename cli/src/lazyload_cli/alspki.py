"""The private CA of `lazyload up --secure`: mutual TLS on accesslog-ingest's ALS port.

`issue(directory, host)` writes a CA, accesslog-ingest's server certificate (DNS name
`accesslog-ingest`, which the global-sidecar checks, plus `host` and localhost) and the
global-sidecar's client certificate (CN `global-sidecar`, SPIFFE-style URI of its ServiceAccount),
each signed by the CA; keys are mode 0600 and the CA key is not kept (nothing else is ever
signed). A new CA every run: `endpoints.json` names the files (`als_tls`).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

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

    from lazyload_cli import pki

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    lifetime = datetime.timedelta(days=30)
    ca = pki.certificate_authority("lazyload ALS CA", lifetime=lifetime, path_length=0)
    server_sans = [pki.general_name(n) for n in (SERVER_NAME, "localhost", *{host, "127.0.0.1"})]
    server = pki.leaf(pki.name(SERVER_NAME), ca, lifetime=lifetime, server=True, sans=server_sans)
    client_sans = [x509.UniformResourceIdentifier(CLIENT_IDENTITY)]
    client = pki.leaf(
        pki.name("global-sidecar"), ca, lifetime=lifetime, server=False, sans=client_sans
    )

    def write(file: str, data: bytes, mode: int) -> Path:
        path = directory / file
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    return AlsPki(
        ca=write("ca.pem", pki.cert_pem(ca[1]), 0o644),
        server_cert=write("ingest.pem", pki.cert_pem(server[1]), 0o644),
        server_key=write("ingest-key.pem", pki.key_pem(server[0]), 0o600),
        client_cert=write("global-sidecar.pem", pki.cert_pem(client[1]), 0o644),
        client_key=write("global-sidecar-key.pem", pki.key_pem(client[0]), 0o600),
    )
