"""Throw-away X.509 certificates for TLS tests and benchmarks (test kit; never for production:
`lazyload up --secure` issues its own with `lazyload_cli.alspki`, the chart with Helm).

`issue_certificates(directory)` writes a CA, a server certificate for `localhost`/`127.0.0.1`
and a client certificate, all signed by that CA, plus a second, unrelated CA's client
certificate (to prove that a foreign client is refused). Built with `lazyload_cli.pki`, as the
CLI's own CAs are.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from lazyload_cli import pki


@dataclass(frozen=True)
class Certificates:
    """PEM file paths written by `issue_certificates`."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    foreign_client_cert: Path
    foreign_client_key: Path


def issue_certificates(directory: Path) -> Certificates:
    """Write a CA, a server and a client certificate (and a foreign client's) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    day = datetime.timedelta(days=1)
    ca = pki.certificate_authority("lazyload test CA", lifetime=day)
    local = [pki.general_name("localhost"), pki.general_name("127.0.0.1")]
    server_key, server_cert = pki.leaf(
        pki.name("localhost"), ca, lifetime=day, server=True, sans=local
    )
    client_key, client_cert = pki.leaf(pki.name("global-sidecar"), ca, lifetime=day, server=False)
    foreign = pki.certificate_authority("foreign CA", lifetime=day)
    other_key, other_cert = pki.leaf(pki.name("intruder"), foreign, lifetime=day, server=False)
    files = {
        "ca": pki.cert_pem(ca[1]),
        "server_cert": pki.cert_pem(server_cert),
        "server_key": pki.key_pem(server_key),
        "client_cert": pki.cert_pem(client_cert),
        "client_key": pki.key_pem(client_key),
        "foreign_client_cert": pki.cert_pem(other_cert),
        "foreign_client_key": pki.key_pem(other_key),
    }
    paths = {}
    for name, data in files.items():
        path = directory / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = path
    return Certificates(**paths)
