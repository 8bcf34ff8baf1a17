"""Who may stream access logs to accesslog-ingest, for every combination of sidecarAccessLogs and
globalSidecar.inMesh (issue 16): the chart's defaults are secure in each.

- the global-sidecars' ALS port (grpcPort) always takes only lazyload's own mutual TLS, bypasses
  ingest's istio-proxy (excludeInboundPorts) and the global-sidecar's (excludeOutboundPorts);
- with sidecarAccessLogs, ingest runs in the mesh (injected, waiting for its proxy) with a second
  port for the sidecars: STRICT mTLS on it alone, an AuthorizationPolicy admitting only the
  configured principals there (the admin port as before), ingest checking each stream's
  x-forwarded-client-cert (LAZYLOAD_GRPC__MESH_PORT, the global-sidecar's service account), the
  Service port as gRPC, and no access logs from lazyload's own pods;
- refused: ALS mutual TLS off without alsTls.allowInsecure, a mesh port on another port of
  ingest, no principals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from deploy_support import CHART, helm_tool, values_file

NS = "mesh-operator"
INGEST = f"{NS}/lazyload-accesslog-ingest"


def _render(tmp_path: Path, values: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """kind -> `namespace/name` -> object (and "NOTES" -> "" -> {"text": the notes})."""
    path = values_file(tmp_path, values)
    result = helm_tool("render", str(CHART), "--values", path, "--namespace", NS)
    rendered = json.loads(result.stdout)
    objs: dict[str, dict[str, dict[str, Any]]] = {"NOTES": {"": {"text": rendered["notes"]}}}
    for manifest in rendered["manifests"]:
        o = manifest["object"]
        key = f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"
        objs.setdefault(o["kind"], {})[key] = o
    return objs


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


@pytest.mark.parametrize("in_mesh", [True, False])
@pytest.mark.parametrize("sidecar_logs", [True, False])
def test_every_combination_is_secure_by_default(
    tmp_path: Path, sidecar_logs: bool, in_mesh: bool
) -> None:
    objs = _render(
        tmp_path,
        {"sidecarAccessLogs": {"enabled": sidecar_logs}, "globalSidecar": {"inMesh": in_mesh}},
    )
    ingest = objs["Deployment"][INGEST]
    env, template = _env(ingest), ingest["spec"]["template"]
    # the global-sidecars' port: lazyload's own mutual TLS, around every istio-proxy
    assert env["LAZYLOAD_GRPC__REQUIRE_CLIENT_CERT"] == "true"
    assert template["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] == (
        "8082"
    )
    assert _env(objs["Deployment"][f"{NS}/lazyload-global-pilot"])["LAZYLOAD_ALS__TLS_CERT_FILE"]
    gs = objs["Deployment"][f"{NS}/lazyload-global-sidecar"]["spec"]["template"]["metadata"]
    if in_mesh:
        excluded = gs["annotations"]["traffic.sidecar.istio.io/excludeOutboundPorts"]
        assert "8082" in excluded.split(",")
    mesh_objects = {
        kind: objs.get(kind, {}).get(INGEST)
        for kind in ("PeerAuthentication", "AuthorizationPolicy")
    }
    ports = {p["name"]: p for p in objs["Service"][INGEST]["spec"]["ports"]}
    if not sidecar_logs:
        assert mesh_objects == {"PeerAuthentication": None, "AuthorizationPolicy": None}
        assert "LAZYLOAD_GRPC__MESH_PORT" not in env and "grpc-als-mesh" not in ports
        assert "sidecar.istio.io/inject" not in template["metadata"]["labels"]
        return
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert (
        "holdApplicationUntilProxyStarts"
        in template["metadata"]["annotations"]["proxy.istio.io/config"]
    )
    assert env["LAZYLOAD_GRPC__MESH_PORT"] == "8083"
    assert env["LAZYLOAD_GRPC__MESH_GLOBAL_SIDECAR_ACCOUNT"] == "lazyload-global-sidecar"
    container_ports = template["spec"]["containers"][0]["ports"]
    assert {"name": "grpc-als-mesh", "containerPort": 8083, "protocol": "TCP"} in container_ports
    assert ports["grpc-als-mesh"]["appProtocol"] == "grpc"  # HTTP/2 inbound: XFCC is set
    peer = mesh_objects["PeerAuthentication"]
    assert peer is not None
    assert peer["spec"]["portLevelMtls"] == {"8083": {"mode": "STRICT"}}
    assert "mtls" not in peer["spec"]  # the admin port as the mesh has it (Prometheus)
    selector = ingest["spec"]["selector"]["matchLabels"]
    assert peer["spec"]["selector"]["matchLabels"] == selector
    policy = mesh_objects["AuthorizationPolicy"]
    assert policy is not None and policy["spec"]["action"] == "ALLOW"
    assert policy["spec"]["selector"]["matchLabels"] == selector
    assert policy["spec"]["rules"] == [
        {
            "from": [{"source": {"principals": ["*"]}}],
            "to": [{"operation": {"ports": ["8083"]}}],
        },
        {"to": [{"operation": {"ports": ["8080"]}}]},
    ]
    notes = objs["NOTES"][""]["text"]  # where the mesh config's providers must point
    assert "lazyload-accesslog-ingest.mesh-operator.svc.cluster.local:8083" in notes, notes
    quiet = objs["Telemetry"][f"{NS}/lazyload-no-access-logs"]["spec"]
    assert quiet["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "lazyload"
    assert quiet["accessLogging"][0]["disabled"] is True


def test_principals_namespace_mode_and_refusals(tmp_path: Path) -> None:
    principal = "cluster.local/ns/shop/sa/*"
    objs = _render(
        tmp_path,
        {
            "sidecarAccessLogs": {"enabled": True, "principals": [principal]},
            "globalSidecar": {"mode": "namespace", "namespaces": ["a", "b"]},
        },
    )
    rules = objs["AuthorizationPolicy"][INGEST]["spec"]["rules"]
    assert rules[0]["from"] == [{"source": {"principals": [principal]}}]
    assert set(objs["Telemetry"]) >= {
        f"{ns}/lazyload-no-access-logs" for ns in (NS, "a", "b")
    }  # lazyload's own pods report nothing, wherever they run
    insecure = _render(tmp_path, {"alsTls": {"enabled": False, "allowInsecure": True}})
    assert "LAZYLOAD_GRPC__REQUIRE_CLIENT_CERT" not in _env(insecure["Deployment"][INGEST])
    for bad, word in (
        ({"alsTls": {"enabled": False}}, "allowInsecure"),
        ({"sidecarAccessLogs": {"enabled": True, "port": 8082}}, "sidecarAccessLogs.port"),
        ({"sidecarAccessLogs": {"enabled": True, "principals": []}}, "principals"),
        ({"alsTls": {"allowInsecure": "yes"}}, "allowInsecure"),  # the schema
    ):
        path = values_file(tmp_path, bad)
        result = helm_tool("render", str(CHART), "--values", path, "--namespace", NS, check=False)
        assert result.returncode != 0 and word in result.stdout + result.stderr, bad
