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
from lazyload_common.kube import KubeNotFound
from lazyload_testing.mesh import TRUST_DOMAIN, IstioMesh, MeshWorkload, endpoint_slice
from lazyload_testing.mesh_lazyload import WORMHOLE_PORTS, GlobalSidecar, LazyloadInMesh

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


def _global_sidecar(lazyload: LazyloadInMesh) -> GlobalSidecar:
    """The stack's global-sidecar (the module's stack always runs one)."""
    assert lazyload.global_sidecar is not None
    return lazyload.global_sidecar


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
    global_sidecar = _global_sidecar(lazyload)
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
    wormholes = {f"outbound|{port}||{global_sidecar.host}" for port in WORMHOLE_PORTS}
    assert _outbound(clusters) == {*wormholes, callee_cluster}, clusters
    others = {c for c in clusters if not c.startswith(("outbound|", "inbound|"))}
    assert others <= BASE_CLUSTERS, clusters
    assert {c for c in clusters if c.startswith("inbound|")} == {"inbound|80||"}, clusters


def test_a_first_call_to_a_strict_mtls_namespace_succeeds(
    istio_mesh: IstioMesh, lazyload_in_mesh: LazyloadInMesh
) -> None:
    """Issue 14, scenario 2: the destination's namespace only takes mutual TLS."""
    lazyload, src, dst = lazyload_in_mesh, "lazy-strict-src", "lazy-strict-dst"
    global_sidecar = _global_sidecar(lazyload)
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


def _ready_to_call(lazyload: LazyloadInMesh, caller: MeshWorkload, *lacks: str) -> None:
    """The caller is fenced and its sidecar holds the global-sidecar but none of `lacks`."""
    global_sidecar = _global_sidecar(lazyload)
    lazyload.wait_for(lambda: lazyload.sidecar(caller.namespace, caller.name), "no Sidecar")
    _wait_scoped(lazyload, caller, holds={global_sidecar.cluster}, lacks=set(lacks))
    caller.wait_synced()


def _allow_only(mesh: IstioMesh, namespace: str, app: str, principals: list[str]) -> None:
    """An AuthorizationPolicy that admits only `principals` to `app` (created or replaced)."""
    path = f"/apis/security.istio.io/v1/namespaces/{namespace}/authorizationpolicies"
    body = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": f"only-{app}-callers"},
        "spec": {
            "selector": {"matchLabels": {"app": app}},
            "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": principals}}]}],
        },
    }
    try:
        current = mesh.api.get(f"{path}/{body['metadata']['name']}")
    except KubeNotFound:
        mesh.api.create(path, body)
        return
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    mesh.api.replace(f"{path}/{body['metadata']['name']}", body)


def _wait_policy(lazyload: LazyloadInMesh, callee: MeshWorkload, *needles: str) -> None:
    """Until the callee's inbound RBAC filter holds every one of `needles` (istiod pushes a policy
    change asynchronously; calling to find out would itself teach a dependency)."""

    def pushed() -> bool:
        listeners = callee.admin("/config_dump?resource=dynamic_listeners")
        return all(n in listeners for n in needles)

    lazyload.wait_for(pushed, f"the callee's sidecar has no policy with {needles}")


def test_an_authorization_policy_that_admits_only_the_caller_needs_the_global_sidecar_too(
    istio_mesh: IstioMesh, lazyload_in_mesh: LazyloadInMesh
) -> None:
    """Issue 14, scenario 3 (docs/mesh-policy.md): a first call reaches the destination from the
    global-sidecar, with the global-sidecar's identity. A policy that admits only the caller
    refuses it (403) - the dependency is still learned, and every later call goes direct with the
    caller's own identity and is admitted. A policy that also admits the global-sidecar's
    principal, as the docs say, admits first calls too."""
    lazyload, src, dst = lazyload_in_mesh, "lazy-authz-src", "lazy-authz-dst"
    strict = istio_mesh.add_workload(dst, "strict", {"http": 80})
    documented = istio_mesh.add_workload(dst, "documented", {"http": 80})
    caller = istio_mesh.add_workload(src, "caller", {"http": 80})
    gs_principal = f"{TRUST_DOMAIN}/ns/mesh-operator/sa/global-sidecar"
    caller_principal = f"{TRUST_DOMAIN}/ns/{src}/sa/caller"
    _allow_only(istio_mesh, dst, "strict", [caller_principal])
    _allow_only(istio_mesh, dst, "documented", [caller_principal, gs_principal])
    _wait_policy(lazyload, strict, f"/ns/{src}/sa/caller")
    _wait_policy(lazyload, documented, f"/ns/{src}/sa/caller", "/sa/global-sidecar")
    clusters = {f"outbound|80||{w.host}" for w in (strict, documented)}
    _ready_to_call(lazyload, caller, *clusters)

    # through the global-sidecar, the call carries the global-sidecar's identity: refused ...
    status, body = caller.http_get(f"http://{strict.host}/first")
    assert status == 403 and "RBAC" in body, (status, body)
    # ... unless the policy admits it as well
    status, body = caller.http_get(f"http://{documented.host}/first")
    assert status == 200, body
    assert json.loads(body)["headers"]["slime-orig-dest"] == f"{documented.service_ip}:80"

    # both are learned; later calls go direct, as the caller, and are admitted
    lazyload.wait_for(
        lambda: (
            {strict.host, documented.host}
            <= {h.split("/", 1)[-1] for h in _egress_hosts(lazyload.sidecar(src, "caller"))}
        ),
        "the first calls taught nothing",
    )
    _wait_scoped(lazyload, caller, holds=clusters, lacks=set())
    caller.wait_synced()
    for callee in (strict, documented):
        status, body = caller.http_get(f"http://{callee.host}/direct")
        assert status == 200, body
        assert json.loads(body)["headers"]["x-forwarded-client-cert"].endswith("/sa/caller")


def test_a_first_call_honours_a_virtualservice_with_weighted_subsets(
    istio_mesh: IstioMesh, lazyload_in_mesh: LazyloadInMesh
) -> None:
    """Issue 14, scenario 4: all of `reviews` goes to subset v2; a first call through the
    global-sidecar (its pod's istio-proxy applies the VirtualService) lands on v2, as does every
    call after it."""
    lazyload, ns = lazyload_in_mesh, "lazy-vs"
    v1 = istio_mesh.add_workload(ns, "reviews", {"http": 80}, labels={"version": "v1"})
    v2 = istio_mesh.add_workload(
        ns, "reviews-v2", {"http": 80}, labels={"app": "reviews", "version": "v2"}, service=False
    )
    pod = istio_mesh.api.get(f"/api/v1/namespaces/{ns}/pods/reviews-v2")
    slice_ = endpoint_slice(ns, "reviews", v2.ip, [{"name": "http", "port": 80}], "")
    slice_["metadata"]["name"] = "reviews-v2-rig"
    slice_["endpoints"][0]["targetRef"].update(name="reviews-v2", uid=pod["metadata"]["uid"])
    istio_mesh.api.create(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", slice_)
    host = v1.host
    istio_mesh.api.create(
        f"/apis/networking.istio.io/v1/namespaces/{ns}/destinationrules",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": "reviews"},
            "spec": {
                "host": host,
                "subsets": [{"name": n, "labels": {"version": n}} for n in ("v1", "v2")],
            },
        },
    )
    istio_mesh.api.create(
        f"/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices",
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews"},
            "spec": {
                "hosts": [host],
                "http": [
                    {
                        "route": [
                            {"destination": {"host": host, "subset": "v1"}, "weight": 0},
                            {"destination": {"host": host, "subset": "v2"}, "weight": 100},
                        ]
                    }
                ],
            },
        },
    )
    caller = istio_mesh.add_workload(ns, "caller", {"http": 80})
    _ready_to_call(lazyload, caller, f"outbound|80|v2|{host}")
    # the global-sidecar's own proxy has the subsets before the first call
    global_sidecar = lazyload.global_sidecar
    assert global_sidecar is not None and global_sidecar.proxy is not None
    global_sidecar.proxy.wait_for_clusters(f"outbound|80|v2|{host}")

    answers = [caller.http_get(f"http://{host}/call-{i}") for i in range(6)]
    echoes = [json.loads(body) for status, body in answers if status == 200]
    assert len(echoes) == len(answers), answers
    assert "slime-orig-dest" in echoes[0]["headers"], "the first call went direct"
    assert {e["workload"] for e in echoes} == {"reviews-v2"}, [e["workload"] for e in echoes]


def test_a_grpc_first_call_stays_h2_end_to_end_and_is_learned(
    istio_mesh: IstioMesh, lazyload_in_mesh: LazyloadInMesh
) -> None:
    """Issue 14, scenario 5 (gRPC): a unary gRPC call to a Service the caller has never called
    goes through the global-sidecar as h2 (gRPC cannot be downgraded to HTTP/1.1 and keep its
    trailers), the dependency is learned, and the next call goes direct."""
    lazyload, ns = lazyload_in_mesh, "lazy-grpc"
    global_sidecar = _global_sidecar(lazyload)
    callee = istio_mesh.add_workload(ns, "greeter", {"grpc": 9090})
    caller = istio_mesh.add_workload(ns, "caller", {"http": 80})
    callee_cluster = f"outbound|9090||{callee.host}"
    gs_cluster = f"outbound|9090||{global_sidecar.host}"
    _ready_to_call(lazyload, caller, callee_cluster)

    code, body = caller.grpc_call(callee.host, 9090, "/demo.Greeter/Hello", b"first")
    assert code == "OK", f"{code} {body}\n{lazyload.logs()}"
    echo = json.loads(body)
    assert (echo["workload"], echo["method"], echo["request"]) == (
        "greeter",
        "/demo.Greeter/Hello",
        "first",
    )
    assert echo["metadata"]["slime-orig-dest"] == f"{callee.service_ip}:9090"
    assert caller.host_counters(gs_cluster)[f"{global_sidecar.ip}:9090"]["rq_success"] == 1

    lazyload.wait_for(
        lambda: (
            callee.host
            in {h.split("/", 1)[-1] for h in _egress_hosts(lazyload.sidecar(ns, "caller"))}
        ),
        "the gRPC first call taught nothing",
    )
    _wait_scoped(lazyload, caller, holds={callee_cluster}, lacks=set())
    caller.wait_synced()
    code, body = caller.grpc_call(callee.host, 9090, "/demo.Greeter/Hello", b"second")
    assert code == "OK", body
    assert "slime-orig-dest" not in json.loads(body)["metadata"]
    assert caller.host_counters(callee_cluster)[f"{callee.ip}:9090"]["rq_success"] == 1


def test_a_raw_tcp_first_call_is_tunnelled_through_the_global_sidecar_and_learned(
    istio_mesh: IstioMesh, lazyload_in_mesh: LazyloadInMesh
) -> None:
    """Issue 14, scenario 5 (raw TCP, issue 15's TCP steering): a TCP connection to a Service
    address the caller's sidecar does not know is tunnelled to the global-sidecar (an HTTP POST
    over the mesh's mTLS leg), which sends the bytes on to the Service; the dependency is learned
    and the next connection goes direct through the Service's own cluster."""
    lazyload, ns = lazyload_in_mesh, "lazy-tcp"
    global_sidecar = _global_sidecar(lazyload)
    callee = istio_mesh.add_workload(ns, "store", {"tcp-store": 9000})
    caller = istio_mesh.add_workload(ns, "caller", {"http": 80})
    callee_cluster = f"outbound|9000||{callee.host}"
    callee_ip = callee.service_ip
    assert callee_ip is not None  # the workload has a Service
    _ready_to_call(lazyload, caller, callee_cluster)
    # istiod pushed the steering chain for the callee's address into the caller's sidecar
    lazyload.wait_for(
        lambda: (
            "lazyload-tcp-9000"
            in (listeners := caller.admin("/config_dump?resource=dynamic_listeners"))
            and callee_ip in listeners
        ),
        "the caller's sidecar has no TCP steering chain for the callee",
    )

    assert caller.tcp_echo(callee.host, 9000, b"first bytes") == b"first bytes"
    # one tunnel (a POST) to the global-sidecar, whose pod's proxy connected to the callee
    gs_endpoint = f"{global_sidecar.ip}:80"
    assert caller.host_counters(global_sidecar.cluster)[gs_endpoint]["rq_total"] == 1
    assert _forwarded(global_sidecar, callee_cluster)[f"{callee.ip}:9000"]["cx_total"] == 1
    lazyload.wait_for(
        lambda: (
            callee.host
            in {h.split("/", 1)[-1] for h in _egress_hosts(lazyload.sidecar(ns, "caller"))}
        ),
        f"the TCP first call taught nothing\n{lazyload.logs()}",
    )
    _wait_scoped(lazyload, caller, holds={callee_cluster}, lacks=set())
    caller.wait_synced()
    assert caller.tcp_echo(callee.host, 9000, b"second bytes") == b"second bytes"
    assert caller.host_counters(callee_cluster)[f"{callee.ip}:9000"]["cx_total"] == 1
    assert caller.host_counters(global_sidecar.cluster)[gs_endpoint]["rq_total"] == 1
    assert _forwarded(global_sidecar, callee_cluster)[f"{callee.ip}:9000"]["cx_total"] == 1
