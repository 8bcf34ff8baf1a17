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
            with pytest.raises(Exception, match="Authorization Violation"):
                await nats.connect(server.url, allow_reconnect=False)

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
