"""lazyload in a real Istio mesh (issue 14's scenario tests): the four services against the rig's
API server, the global-sidecar as a pod of the rig fed by global-pilot, global-pilot's mesh-side
objects (the `to-global-sidecar` EnvoyFilter, the global-sidecar Service) applied to istiod, and
real calls from real sidecars."""

from __future__ import annotations

import http.client
import json
import urllib.request
from typing import Any

import pytest
from lazyload_testing.mesh import IstioMesh, MeshWorkload
from lazyload_testing.mesh_lazyload import GlobalSidecar, LazyloadInMesh

pytestmark = [pytest.mark.real, pytest.mark.mesh]

# What every sidecar holds whatever its scope: Istio's own clusters, and its pod's inbound ones.
BASE_CLUSTERS = {
    "BlackHoleCluster",
    "PassthroughCluster",
    "InboundPassthroughCluster",
    "InboundPassthroughClusterIpv4",
    "agent",
    "prometheus_stats",
    "sds-grpc",
    "xds-grpc",
}


def _egress_hosts(sidecar: dict[str, Any] | None) -> list[str]:
    if not sidecar:
        return []
    return [h for e in sidecar["spec"].get("egress") or [] for h in e.get("hosts") or []]


def _plaintext_answers(workload: MeshWorkload) -> bool:
    try:
        with urllib.request.urlopen(f"http://{workload.ip}:80/", timeout=3) as response:
            return bool(response.status)
    except (OSError, http.client.HTTPException):
        return False


def _forwarded(global_sidecar: GlobalSidecar, cluster: str) -> dict[str, dict[str, int]]:
    """Per endpoint of `cluster`, the counters of whatever sent the global-sidecar's calls on:
    its pod's istio-proxy (in the mesh, the default), or its own Envoy (a bare global-sidecar)."""
    return (global_sidecar.proxy or global_sidecar).host_counters(cluster)


def _outbound(clusters: list[str]) -> set[str]:
    return {c for c in clusters if c.startswith("outbound|")}


def _wait_scoped(
    lazyload: LazyloadInMesh, caller: MeshWorkload, *, holds: set[str], lacks: set[str]
) -> list[str]:
    """Until the caller's sidecar holds every cluster of `holds` and none of `lacks`."""

    def probe() -> list[str] | None:
        clusters = caller.clusters()
        if holds <= set(clusters) and not lacks & set(clusters):
            return clusters
        return None

    try:
        return lazyload.wait_for(probe, f"{caller.name}'s sidecar holds {holds}, not {lacks}")
    except TimeoutError as e:
        raise AssertionError(f"{e}: holds {caller.clusters()}\n{lazyload.logs()}") from e


def test_a_first_call_goes_through_the_global_sidecar_and_the_next_goes_direct(
    istio_mesh: IstioMesh, lazyload_in_mesh: LazyloadInMesh
) -> None:
    lazyload, ns = lazyload_in_mesh, "lazy-default"
    global_sidecar = lazyload.global_sidecar
    assert global_sidecar is not None
    callee = istio_mesh.add_workload(ns, "callee", {"http": 80})
    istio_mesh.add_workload(ns, "bystander", {"http": 80})  # a Service nobody calls
    caller = istio_mesh.add_workload(ns, "caller", {"http": 80})
    callee_cluster = f"outbound|80||{callee.host}"
    bystander_cluster = f"outbound|80||bystander.{ns}.svc.cluster.local"

    # Eager auto-fence: the caller has its fence and its base Sidecar before any traffic, and
    # istiod pushed the narrow scope: the global-sidecar, not the other Services of the mesh.
    lazyload.wait_for(lambda: lazyload.fence(ns, "caller"), "no ServiceFence of the caller")
    base = lazyload.wait_for(lambda: lazyload.sidecar(ns, "caller"), "no Sidecar of the caller")
    assert callee.host not in json.dumps(base["spec"])
    _wait_scoped(
        lazyload, caller, holds={global_sidecar.cluster}, lacks={callee_cluster, bystander_cluster}
    )
    caller.wait_synced()

    # The first call: the caller's sidecar does not know the host and sends it to the
    # global-sidecar (the catch-all of to-global-sidecar), which forwards it to the callee.
    status, body = caller.http_get(f"http://{callee.host}/first")
    assert status == 200, f"{body}\n{lazyload.logs()}"
    echo = json.loads(body)
    assert echo["workload"] == "callee"
    assert echo["headers"]["slime-orig-dest"] == f"{callee.service_ip}:80"
    assert echo["headers"]["slime-source-ns"] == ns
    assert (
        caller.host_counters(global_sidecar.cluster)[f"{global_sidecar.ip}:80"]["rq_success"] == 1
    )
    assert _forwarded(global_sidecar, callee_cluster)[f"{callee.ip}:80"]["rq_success"] == 1

    # The ServiceFence learns the host, the Sidecar gets it, istiod pushes it.
    lazyload.wait_for(
        lambda: callee.host in json.dumps((lazyload.fence(ns, "caller") or {}).get("status")),
        "the caller's ServiceFence did not learn the callee",
    )
    lazyload.wait_for(
        lambda: any(h.endswith(callee.host) for h in _egress_hosts(lazyload.sidecar(ns, "caller"))),
        "the caller's Sidecar did not get the callee",
    )
    _wait_scoped(lazyload, caller, holds={callee_cluster}, lacks={bystander_cluster})
    caller.wait_synced()

    # The next call goes direct: through the callee's own cluster, not the global-sidecar's.
    status, body = caller.http_get(f"http://{callee.host}/second")
    assert status == 200, body
    echo = json.loads(body)
    assert echo["workload"] == "callee"
    assert "slime-orig-dest" not in echo["headers"]
    assert caller.host_counters(callee_cluster)[f"{callee.ip}:80"]["rq_success"] == 1
    assert (
        caller.host_counters(global_sidecar.cluster)[f"{global_sidecar.ip}:80"]["rq_success"] == 1
    )
    assert _forwarded(global_sidecar, callee_cluster)[f"{callee.ip}:80"]["rq_success"] == 1

    # The caller's sidecar holds only its fence's clusters plus the base ones.
    clusters = caller.clusters()
    assert _outbound(clusters) == {global_sidecar.cluster, callee_cluster}, clusters
    others = {c for c in clusters if not c.startswith(("outbound|", "inbound|"))}
    assert others <= BASE_CLUSTERS, clusters
    assert {c for c in clusters if c.startswith("inbound|")} == {"inbound|80||"}, clusters


def test_a_first_call_to_a_strict_mtls_namespace_succeeds(
    istio_mesh: IstioMesh, lazyload_in_mesh: LazyloadInMesh
) -> None:
    """Issue 14, scenario 2: the destination's namespace only takes mutual TLS."""
    lazyload, src, dst = lazyload_in_mesh, "lazy-strict-src", "lazy-strict-dst"
    global_sidecar = lazyload.global_sidecar
    assert global_sidecar is not None
    callee = istio_mesh.add_workload(dst, "callee", {"http": 80})
    caller = istio_mesh.add_workload(src, "caller", {"http": 80})
    istio_mesh.api.create(
        f"/apis/security.istio.io/v1/namespaces/{dst}/peerauthentications",
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "default"},
            "spec": {"mtls": {"mode": "STRICT"}},
        },
    )
    callee_cluster = f"outbound|80||{callee.host}"
    lazyload.wait_for(lambda: lazyload.sidecar(src, "caller"), "no Sidecar of the caller")
    _wait_scoped(lazyload, caller, holds={global_sidecar.cluster}, lacks={callee_cluster})
    caller.wait_synced()
    # STRICT is in force at the callee: its sidecar refuses plaintext (here from the test
    # process, on the bridge like a pod without a sidecar, as the global-sidecar is).
    lazyload.wait_for(lambda: not _plaintext_answers(callee), "the callee still takes plaintext")

    status, body = caller.http_get(f"http://{callee.host}/first")
    gs_counters = _forwarded(global_sidecar, callee_cluster)
    assert status == 200, (
        f"{status} {body}; global-sidecar {callee_cluster}: {gs_counters}; caller's "
        f"{global_sidecar.cluster}: {caller.host_counters(global_sidecar.cluster)}; callee's "
        f"inbound: {callee.host_counters('inbound|80||')}; callee's proxy stats: "
        f"{callee.stats('(ssl|tls).*(handshake|error|fail)|downstream_cx_total')}"
    )
    echo = json.loads(body)
    assert echo["workload"] == "callee"
    assert echo["headers"]["slime-orig-dest"] == f"{callee.service_ip}:80"
