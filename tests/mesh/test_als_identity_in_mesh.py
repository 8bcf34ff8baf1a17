"""Ordinary sidecars' access logs reach accesslog-ingest with the identity mTLS proves (issue 16),
on the real Istio rig.

accesslog-ingest's mesh ALS port runs as the chart runs it with `sidecarAccessLogs.enabled`: a
pod with an istio-proxy (here `lazyload_testing.als_pod`, ingest's real receiver with its
`MeshPort` check), the chart's own PeerAuthentication (STRICT on that port), AuthorizationPolicy
and Telemetry objects - rendered from the chart and applied as they are - and Istio's
envoyHttpAls/envoyTcpAls providers in the mesh config (docs/install.md). Then:

- a sidecar's access logs arrive over its ALS stream with the x-forwarded-client-cert that
  ingest's inbound proxy set: the stream is admitted as `spiffe://cluster.local/ns/<ns>/sa/<sa>`
  of the sending pod, and its edge is learned;
- a mesh pod that claims another namespace in its node metadata (and forges an XFCC element of
  that namespace) is refused: PERMISSION_DENIED, counted, nothing learned;
- a client outside the mesh (no mTLS: the test process on the pod network), even with a forged
  XFCC header, never reaches the receiver: the STRICT port refuses its plaintext.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from lazyload_accesslog_ingest import receiving
from lazyload_common.kube import KubeNotFound
from lazyload_testing import ingest as t
from lazyload_testing.mesh import IstioMesh, MeshWorkload, PodApp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploy_support import CHART, helm_tool, values_file

pytestmark = [pytest.mark.real, pytest.mark.mesh]

NS = "lazy-als"  # the release namespace of this rendering
CLIENTS = "lazy-als-c"
INGEST = "lazyload-accesslog-ingest"
MESH_PORT = 8083  # the chart's sidecarAccessLogs.port
STATUS_PORT = 15101
PROVIDERS = ["lazyload-als-http", "lazyload-als-tcp"]
ISTIO_KINDS = {
    "PeerAuthentication": "security.istio.io/v1/peerauthentications",
    "AuthorizationPolicy": "security.istio.io/v1/authorizationpolicies",
    "Telemetry": "telemetry.istio.io/v1/telemetries",
}


def _chart_objects(tmp_path: Path) -> list[dict[str, Any]]:
    values = values_file(tmp_path, {"sidecarAccessLogs": {"enabled": True}})
    result = helm_tool("render", str(CHART), "--values", values, "--namespace", NS)
    return [m["object"] for m in json.loads(result.stdout)["manifests"]]


@contextlib.contextmanager
def _chart_mesh_side(mesh: IstioMesh, objs: list[dict[str, Any]]) -> Iterator[None]:
    """The chart's Istio objects as rendered, and the providers in the mesh config."""
    created = []
    for obj in objs:
        if obj["kind"] in ISTIO_KINDS:
            namespace = obj["metadata"]["namespace"]
            path = f"/apis/{ISTIO_KINDS[obj['kind']]}"
            path = path.replace("/v1/", f"/v1/namespaces/{namespace}/", 1)
            mesh.api.create(path, obj)
            created.append(f"{path}/{obj['metadata']['name']}")
    service = f"{INGEST}.{NS}.svc.cluster.local"
    config = mesh.mesh_config()
    config["extensionProviders"] = [
        {"name": PROVIDERS[0], "envoyHttpAls": {"service": service, "port": MESH_PORT}},
        {"name": PROVIDERS[1], "envoyTcpAls": {"service": service, "port": MESH_PORT}},
    ]
    mesh.set_mesh_config(config)
    try:
        yield
    finally:
        mesh.set_mesh_config(mesh.mesh_config())
        for path in created:
            with contextlib.suppress(KubeNotFound):
                mesh.api.delete(path)


def _receiver_command(pod: MeshWorkload) -> list[str]:
    """als_pod in the pod's network namespace; the chart's global-sidecar service account."""
    return [
        *("ip", "netns", "exec", pod.netns, sys.executable, "-m", "lazyload_testing.als_pod"),
        *("--port", str(MESH_PORT), "--status-port", str(STATUS_PORT)),
        *("--account", "lazyload-global-sidecar"),
    ]


def _status(receiver: MeshWorkload) -> dict[str, Any]:
    url = f"http://{receiver.ip}:{STATUS_PORT}/status"
    with urllib.request.urlopen(url, timeout=5) as response:
        result: dict[str, Any] = json.load(response)
    return result


def _claim(namespace: str, workload: str) -> bytes:
    """The first message of an ALS stream whose node claims `namespace`, with one entry."""
    ident = t.identifier(
        f"sidecar~10.0.0.1~{workload}.{namespace}~{namespace}.svc.cluster.local",
        log_name="lazyload-als-http",
        metadata={"NAMESPACE": namespace, "WORKLOAD_NAME": workload},
    )
    entry = t.http_entry("forged.shop.svc.cluster.local", caller="10.0.0.1")
    return t.message(entry, ident=ident).SerializeToString()


def test_sidecar_access_logs_carry_the_identity_mtls_proves(
    istio_mesh: IstioMesh, tmp_path: Path
) -> None:
    mesh = istio_mesh
    objs = _chart_objects(tmp_path)
    deployment = next(
        o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == INGEST
    )
    labels = dict(deployment["spec"]["template"]["metadata"]["labels"])
    labels.pop("sidecar.istio.io/inject")
    mesh._ensure_namespace(NS)
    mesh._ensure_namespace(CLIENTS)
    with _chart_mesh_side(mesh, objs):
        receiver = mesh.add_workload(
            NS,
            INGEST,
            {"grpc-als-mesh": MESH_PORT},
            labels,
            app=PodApp(
                command=_receiver_command,
                exclude_inbound_ports=(STATUS_PORT,),
                service_account=INGEST,
            ),
        )
        receiver.processes.wait_http(
            "app", f"http://{receiver.ip}:{STATUS_PORT}/status", timeout=30
        )
        receiver.wait_for_clusters(f"inbound|{MESH_PORT}||")
        client = mesh.add_workload(CLIENTS, "client", {"http": 80})  # it calls itself
        client.wait_for_clusters(f"outbound|{MESH_PORT}||{receiver.host}")

        # 1. the client's own sidecar streams its access log: admitted as what mTLS proves
        proven = f"spiffe://cluster.local/ns/{CLIENTS}/sa/client"
        edge = [CLIENTS, "client", client.host]
        deadline = time.monotonic() + 60
        status = _status(receiver)
        while time.monotonic() < deadline:
            assert client.http_get(f"http://{client.host}/ping")[0] == 200
            status = _status(receiver)
            peers = {(a["peer"], a["namespace"], a["workload"]) for a in status["admitted"]}
            if (proven, CLIENTS, "client") in peers and edge in status["edges"]:
                break
            time.sleep(1)
        else:
            pytest.fail(f"no admitted access log of the client: {status}\n{client.log_tail()}")
        assert all(a["peer"].split("/")[4] == a["namespace"] for a in status["admitted"])

        # 2. a mesh pod claiming another namespace (and forging an XFCC element of it)
        forged = f"By=x;URI=spiffe://cluster.local/ns/{NS}/sa/{INGEST}"
        before = status["closed"]["identity_mismatch"]
        code, details = client.grpc_call(
            receiver.host,
            MESH_PORT,
            receiving.METHOD_PATH,
            _claim(NS, "forger"),
            {"x-forwarded-client-cert": forged},
        )
        assert code == "PERMISSION_DENIED", details
        assert CLIENTS in details
        status = _status(receiver)
        assert status["closed"]["identity_mismatch"] == before + 1
        assert not [e for e in status["edges"] if e[0] == NS]
        # the same pod telling the truth is admitted
        code, details = client.grpc_call(
            receiver.host, MESH_PORT, receiving.METHOD_PATH, _claim(CLIENTS, "client")
        )
        assert code == "OK", details

        # 3. a client outside the mesh: no mTLS, refused before the receiver sees anything
        admitted = len(_status(receiver)["admitted"])
        with grpc.insecure_channel(f"{receiver.ip}:{MESH_PORT}") as channel:
            call = channel.unary_unary(receiving.METHOD_PATH)
            with pytest.raises(grpc.RpcError) as refused:
                call(
                    _claim(CLIENTS, "client"),
                    metadata=(("x-forwarded-client-cert", f"By=x;URI={proven}"),),
                    timeout=10,
                )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
        after = _status(receiver)
        assert len(after["admitted"]) == admitted
        assert after["closed"]["unauthenticated"] == status["closed"]["unauthenticated"]
