"""NATS identities in the Helm chart and docker compose (issue 16).

Covers: by default every service that uses NATS mounts only its own identity Secret and gets
LAZYLOAD_NATS__NKEY_SEED_FILE (global-pilot none); `nats.auth.secrets`, `kind: creds`, TLS with
a private CA and `auth.enabled: false` render what they say; the schema refuses an unknown kind;
deploy/tools/nats_auth.py writes keys a real nats-server accepts (kept on a second run) and the
Secrets the chart expects by default; compose hands each service its own seed and nats-server
the users.
"""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from deploy_support import CHART, ROOT, TOOLS, helm_tool, values_file
from lazyload_common import natsauth
from lazyload_testing.nats import start_nats_server
from nats.aio.client import Client as NATS

NATS_SERVICES = ("accesslog-ingest", "fence-reconciler", "sidecar-writer")


def _deployments(tmp_path: Path, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    path = values_file(tmp_path, values)
    result = helm_tool("render", str(CHART), "--values", path, "--namespace", "mesh-operator")
    objs = [m["object"] for m in json.loads(result.stdout)["manifests"]]
    return {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o["spec"]["template"]["spec"]
        for o in objs
        if o["kind"] == "Deployment"
        and o["metadata"]["labels"].get("app.kubernetes.io/component")
        in (*NATS_SERVICES, "global-pilot")
    }


def _env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}


def _volumes(pod: dict[str, Any]) -> dict[str, Any]:
    return {v["name"]: v for v in pod.get("volumes", [])}


def test_chart_gives_each_service_its_own_identity_by_default(tmp_path: Path) -> None:
    pods = _deployments(tmp_path, {})
    for service in NATS_SERVICES:
        env, volumes = _env(pods[service]), _volumes(pods[service])
        assert env["LAZYLOAD_NATS__NKEY_SEED_FILE"] == "/etc/lazyload/nats/seed"
        secret = volumes["nats-identity"]["secret"]
        assert secret["secretName"] == f"lazyload-nats-{service}"
        assert secret["items"] == [{"key": "seed", "path": "seed"}]
        assert secret["defaultMode"] == 0o440
        mounts = {m["name"]: m for m in pods[service]["containers"][0]["volumeMounts"]}
        assert mounts["nats-identity"]["mountPath"] == "/etc/lazyload/nats"
        assert "LAZYLOAD_NATS__TLS_CA_FILE" not in env
    assert "nats-identity" not in _volumes(pods["global-pilot"])
    assert "LAZYLOAD_NATS__NKEY_SEED_FILE" not in _env(pods["global-pilot"])


def test_chart_nats_auth_and_tls_values(tmp_path: Path) -> None:
    values = {
        "nats": {
            "url": "tls://nats.nats.svc:4222",
            "auth": {"kind": "creds", "secrets": {"fence-reconciler": "my-reconciler-creds"}},
            "tls": {"existingSecret": "nats-ca", "clientCert": True},
        }
    }
    pods = _deployments(tmp_path, values)
    reconciler = pods["fence-reconciler"]
    env = _env(reconciler)
    assert env["LAZYLOAD_NATS__CREDS_FILE"] == "/etc/lazyload/nats/user.creds"
    assert "LAZYLOAD_NATS__NKEY_SEED_FILE" not in env
    secret = _volumes(reconciler)["nats-identity"]["secret"]
    assert secret["secretName"] == "my-reconciler-creds"
    assert secret["items"] == [{"key": "creds", "path": "user.creds"}]
    assert _volumes(pods["sidecar-writer"])["nats-identity"]["secret"]["secretName"] == (
        "lazyload-nats-sidecar-writer"
    )
    assert env["LAZYLOAD_NATS__TLS_CA_FILE"] == "/etc/lazyload/nats-tls/ca.crt"
    assert env["LAZYLOAD_NATS__TLS_CERT_FILE"] == "/etc/lazyload/nats-tls/tls.crt"
    assert _volumes(reconciler)["nats-tls"]["secret"]["secretName"] == "nats-ca"
    off = _deployments(tmp_path, {"nats": {"auth": {"enabled": False}}})
    assert "nats-identity" not in _volumes(off["accesslog-ingest"])
    assert "LAZYLOAD_NATS__NKEY_SEED_FILE" not in _env(off["accesslog-ingest"])


def test_schema_refuses_an_unknown_credential_kind(tmp_path: Path) -> None:
    for bad in (
        {"nats": {"auth": {"kind": "token"}}},
        {"nats": {"auth": {"secrets": {"global-pilot": "x"}}}},
    ):
        path = values_file(tmp_path, bad)
        result = helm_tool("schema", str(CHART), "--values", path, check=False)
        assert result.returncode == 1, f"accepted: {bad}"


def _nats_auth(*args: str) -> None:
    subprocess.run(
        [sys.executable, str(TOOLS / "nats_auth.py"), *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_nats_auth_tool_writes_keys_the_server_accepts(tmp_path: Path) -> None:
    keys, secrets = tmp_path / "auth", tmp_path / "secrets.yaml"
    _nats_auth(str(keys), "--secrets", str(secrets))
    first = {i: natsauth.seed_file(keys, i).read_text() for i in natsauth.IDENTITIES}
    _nats_auth(str(keys))  # kept: a restarted compose project keeps its keys
    assert first == {i: natsauth.seed_file(keys, i).read_text() for i in natsauth.IDENTITIES}
    assert stat.S_IMODE(natsauth.seed_file(keys, "observer").stat().st_mode) == 0o600
    manifests = list(yaml.safe_load_all(secrets.read_text()))
    names = {m["metadata"]["name"]: m["stringData"]["seed"] for m in manifests}
    for service in NATS_SERVICES:  # the chart's default secret names (release `lazyload`)
        assert names[f"lazyload-nats-{service}"] == first[service].strip()
    server = start_nats_server(tmp_path / "nats", config=keys / "nats-server.conf")
    try:

        async def connect_all() -> None:
            for identity in natsauth.IDENTITIES:
                options = natsauth.connect_options(
                    {"kind": "nkey", "seed_file": natsauth.seed_file(keys, identity)}
                )
                nc = await nats.connect(server.url, **options)
                await nc.close()
            anonymous = NATS()
            with pytest.raises(Exception, match="Authorization Violation"):
                await anonymous.connect(server.url, allow_reconnect=False)
            await anonymous.close()  # a refused connect keeps its socket open otherwise

        asyncio.run(connect_all())
    finally:
        server.stop()


def test_compose_hands_each_service_its_own_seed() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    auth = services["nats-auth"]
    assert auth["entrypoint"][:3] == ["python", "/tools/nats_auth.py", "/auth"]
    assert "./deploy/tools/nats_auth.py:/tools/nats_auth.py:ro" in auth["volumes"]
    assert services["nats"]["command"][:2] == ["-c", "/auth/nats-server.conf"]
    for service in NATS_SERVICES:
        spec = services[service]
        assert spec["environment"]["LAZYLOAD_NATS__NKEY_SEED_FILE"] == "/etc/lazyload/nats/seed"
        mounts = [v for v in spec["volumes"] if isinstance(v, dict)]
        assert mounts == [
            {
                "type": "volume",
                "source": "nats-auth",
                "target": "/etc/lazyload/nats/seed",
                "read_only": True,
                "volume": {"subpath": f"{service}.nk"},
            }
        ]
        assert spec["depends_on"]["nats-auth"]["condition"] == "service_completed_successfully"
    assert not [v for v in services["global-pilot"].get("volumes", []) if "nats-auth" in str(v)]


def _render_all(tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    path = values_file(tmp_path, values)
    result = helm_tool("render", str(CHART), "--values", path, "--namespace", "mesh-operator")
    return [m["object"] for m in json.loads(result.stdout)["manifests"]]


def test_chart_als_port_takes_only_the_global_sidecars_certificate(tmp_path: Path) -> None:
    """alsTls (on by default): ingest requires a client certificate of the chart's private CA,
    the global-sidecar mounts one (every global-sidecar namespace gets it) and global-pilot puts
    it into the ALS cluster; certificates are those of one CA with the names checked."""
    from cryptography import x509

    objs = _render_all(tmp_path, {"globalSidecar": {"mode": "namespace", "namespaces": ["a", "b"]}})
    secrets = {
        f"{o['metadata']['namespace']}/{o['metadata']['name']}": o
        for o in objs
        if o["kind"] == "Secret"
    }
    server = secrets["mesh-operator/lazyload-als-server-tls"]["data"]
    clients = [secrets[f"{ns}/lazyload-als-client-tls"]["data"] for ns in ("a", "b")]
    ca = x509.load_pem_x509_certificate(base64.b64decode(server["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(server["tls.crt"]))
    client = x509.load_pem_x509_certificate(base64.b64decode(clients[0]["tls.crt"]))
    for leaf in (cert, client):
        leaf.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "accesslog-ingest" in names.get_values_for_type(x509.DNSName)
    assert clients[0] == clients[1]
    pods = _deployments(tmp_path, {})
    ingest = _env(pods["accesslog-ingest"])
    assert ingest["LAZYLOAD_GRPC__REQUIRE_CLIENT_CERT"] == "true"
    assert ingest["LAZYLOAD_GRPC__TLS_CLIENT_CA_FILE"] == "/etc/lazyload/als-tls/ca.crt"
    assert _volumes(pods["accesslog-ingest"])["als-tls"]["secret"]["secretName"] == (
        "lazyload-als-server-tls"
    )
    pilot = _env(pods["global-pilot"])
    assert pilot["LAZYLOAD_ALS__TLS_CERT_FILE"] == "/etc/lazyload/als-tls/tls.crt"
    assert pilot["LAZYLOAD_ALS__TLS_SERVER_NAME"] == "accesslog-ingest"
    sidecar = next(
        o["spec"]["template"]["spec"]
        for o in objs
        if o["kind"] == "Deployment" and o["metadata"]["namespace"] == "a"
    )
    assert _volumes(sidecar)["als-tls"]["secret"]["secretName"] == "lazyload-als-client-tls"
    mounts = [m["mountPath"] for m in sidecar["containers"][0]["volumeMounts"]]
    assert "/etc/lazyload/als-tls" in mounts
    assert sidecar["securityContext"]["fsGroup"] == 101


def test_chart_als_tls_existing_secrets_off_and_refusals(tmp_path: Path) -> None:
    values = {"alsTls": {"serverSecret": "my-ingest-tls", "clientSecret": "my-gs-tls"}}
    objs = _render_all(tmp_path, values)
    assert not [o for o in objs if o["kind"] == "Secret" and "als" in o["metadata"]["name"]]
    pods = _deployments(tmp_path, values)
    assert _volumes(pods["accesslog-ingest"])["als-tls"]["secret"]["secretName"] == (
        "my-ingest-tls"
    )
    off = _deployments(tmp_path, {"alsTls": {"enabled": False, "allowInsecure": True}})
    assert "LAZYLOAD_GRPC__REQUIRE_CLIENT_CERT" not in _env(off["accesslog-ingest"])
    assert "LAZYLOAD_ALS__TLS_CA_FILE" not in _env(off["global-pilot"])
    for bad in (
        {"alsTls": {"enabled": False}},  # an open ALS port needs allowInsecure
        {"alsTls": {"serverSecret": "only-one"}},
    ):
        path = values_file(tmp_path, bad)
        result = helm_tool(
            "render", str(CHART), "--values", path, "--namespace", "mesh-operator", check=False
        )
        assert result.returncode != 0 and "alsTls" in result.stdout + result.stderr, bad
