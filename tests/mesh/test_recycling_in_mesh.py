"""Recycling with live traffic on the real Istio rig (issue 14, scenario 7; issue 15, "Recycling
that sees live traffic"): once a dependency is in the Sidecar its calls go direct and the
global-sidecar never sees them again, so the liveness comes from the callers' own sidecars - the
mesh-wide Istio `Telemetry` the chart renders with `sidecarAccessLogs.enabled`, whose
`envoyHttpAls`/`envoyTcpAls` providers (declared in Istio's mesh config, docs/install.md) stream
every sidecar's access log to accesslog-ingest. A dependency used every second on the direct path
is never removed; an unused one is."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator

import pytest
from lazyload_common.kube import KubeNotFound
from lazyload_testing.mesh import ISTIO_NAMESPACE, IstioMesh, MeshWorkload, endpoint_slice
from lazyload_testing.mesh_lazyload import LazyloadInMesh

pytestmark = [pytest.mark.real, pytest.mark.mesh]

NS = "lazy-recycle"
INGEST_NS = "mesh-operator"
INGEST = "lazyload-accesslog-ingest"
ALS_PORT = 8082  # the chart's accesslogIngest.grpcPort
RECYCLE_AFTER = 15.0
EXPIRE_WAIT = 2.0
PROVIDERS = ["lazyload-als-http", "lazyload-als-tcp"]


@contextlib.contextmanager
def _sidecar_access_logs(mesh: IstioMesh, ingest_address: str, ingest_port: int) -> Iterator[None]:
    """What the chart and docs/install.md set up: the providers in the mesh config, the
    accesslog-ingest Service they name (here backed by the stack's ALS listener), the Telemetry."""
    service = f"{INGEST}.{INGEST_NS}.svc.cluster.local"
    config = mesh.mesh_config()
    config["extensionProviders"] = [
        {"name": PROVIDERS[0], "envoyHttpAls": {"service": service, "port": ALS_PORT}},
        {"name": PROVIDERS[1], "envoyTcpAls": {"service": service, "port": ALS_PORT}},
    ]
    mesh._ensure_namespace(INGEST_NS, remember=False)
    ports = [{"name": "grpc-als", "port": ALS_PORT, "targetPort": ingest_port, "protocol": "TCP"}]
    mesh.api.create(
        f"/api/v1/namespaces/{INGEST_NS}/services",
        {"metadata": {"name": INGEST}, "spec": {"ports": ports}},  # no selector: the rig's slice
    )
    slice_ = endpoint_slice(
        INGEST_NS, INGEST, ingest_address, [{"name": "grpc-als", "port": ingest_port}], ""
    )
    slice_["endpoints"][0].pop("targetRef", None)
    mesh.api.create(f"/apis/discovery.k8s.io/v1/namespaces/{INGEST_NS}/endpointslices", slice_)
    telemetry = f"/apis/telemetry.istio.io/v1/namespaces/{ISTIO_NAMESPACE}/telemetries"
    mesh.api.create(
        telemetry,
        {
            "apiVersion": "telemetry.istio.io/v1",
            "kind": "Telemetry",
            "metadata": {"name": "lazyload-liveness"},
            "spec": {"accessLogging": [{"providers": [{"name": p} for p in PROVIDERS]}]},
        },
    )
    mesh.set_mesh_config(config)
    try:
        yield
    finally:
        mesh.set_mesh_config(mesh.mesh_config())
        for path in (
            f"{telemetry}/lazyload-liveness",
            f"/apis/discovery.k8s.io/v1/namespaces/{INGEST_NS}/endpointslices/{slice_['metadata']['name']}",
            f"/api/v1/namespaces/{INGEST_NS}/services/{INGEST}",
        ):
            with contextlib.suppress(KubeNotFound):
                mesh.api.delete(path)


@pytest.fixture(scope="module")
def recycling_lazyload(istio_mesh_server: IstioMesh) -> Iterator[LazyloadInMesh]:
    state_dir = istio_mesh_server.directory / "lazyload-recycle"
    if state_dir.exists():
        shutil.rmtree(state_dir)
    stack = LazyloadInMesh(
        istio_mesh_server,
        state_dir,
        service_env={
            # the chart's fenceReconciler.config with sidecarAccessLogs.enabled
            "fence-reconciler": {
                "LAZYLOAD_FENCE__RECYCLE_AFTER": str(RECYCLE_AFTER),
                "LAZYLOAD_FENCE__EXPIRE_WAIT": str(EXPIRE_WAIT),
                "LAZYLOAD_FENCE__LIVENESS_SOURCE": "sidecar-als",
            },
            # a live edge is published again once a second (the chart's default is minutes)
            "accesslog-ingest": {"LAZYLOAD_DEDUP__REFRESH_INTERVAL": "1"},
        },
    )
    with (
        _sidecar_access_logs(istio_mesh_server, stack.config.host, int(stack.config.als_port or 0)),
        stack,
    ):
        yield stack


def _wait_access_logging(workload: MeshWorkload, timeout: float = 60.0) -> None:
    """Until istiod pushed `workload` the Telemetry's providers: the ALS cluster and a listener's
    gRPC access logger sending to it (a busy istiod takes a while; until then nothing on the
    direct path is seen and the test would time istiod, not recycling)."""
    cluster = f"outbound|{ALS_PORT}||{INGEST}.{INGEST_NS}.svc.cluster.local"
    workload.wait_for_clusters(cluster)
    deadline = time.monotonic() + timeout
    while f'"cluster_name": "{cluster}"' not in workload.admin(
        "/config_dump?resource=dynamic_listeners"
    ):
        assert time.monotonic() < deadline, f"{workload.name}: no access logger to {cluster}"
        time.sleep(0.5)


def _hosts(lazyload: LazyloadInMesh, caller: MeshWorkload) -> set[str]:
    sidecar = lazyload.sidecar(caller.namespace, caller.name) or {"spec": {}}
    return {
        h.split("/", 1)[-1]
        for e in sidecar["spec"].get("egress") or []
        for h in e.get("hosts") or []
    }


def test_a_dependency_used_on_the_direct_path_is_kept_and_an_unused_one_recycled(
    istio_mesh: IstioMesh, recycling_lazyload: LazyloadInMesh
) -> None:
    lazyload = recycling_lazyload
    live = istio_mesh.add_workload(NS, "live", {"http": 80})
    idle = istio_mesh.add_workload(NS, "idle", {"http": 80})
    caller = istio_mesh.add_workload(NS, "caller", {"http": 80})
    lazyload.wait_for(lambda: lazyload.sidecar(NS, "caller"), "no Sidecar of the caller")
    caller.wait_synced()
    _wait_access_logging(caller)
    for callee in (live, idle):  # first calls, through the global-sidecar
        status, body = caller.http_get(f"http://{callee.host}/first")
        assert status == 200, body
        assert "slime-orig-dest" in json.loads(body)["headers"]
    live_cluster = f"outbound|80||{live.host}"

    # from now on `live` is called every second (through the global-sidecar until istiod pushed
    # the learned scope, then direct); `idle` never again
    started = time.monotonic()
    direct_calls = 0
    learned = idle_gone_at = None
    while time.monotonic() - started < RECYCLE_AFTER + EXPIRE_WAIT + 40:
        status, body = caller.http_get(f"http://{live.host}/again")
        assert status == 200, body
        direct_calls += "slime-orig-dest" not in json.loads(body)["headers"]
        hosts = _hosts(lazyload, caller)
        if learned is None and {live.host, idle.host} <= hosts:
            learned = time.monotonic()
        if learned is not None:
            assert live.host in hosts, f"a live dependency was recycled\n{lazyload.logs()}"
            if idle.host not in hosts and idle_gone_at is None:
                idle_gone_at = time.monotonic()
        if idle_gone_at is not None and time.monotonic() - idle_gone_at > 3:
            break
        time.sleep(1)
    assert learned is not None, f"the first calls taught nothing\n{lazyload.logs()}"
    assert idle_gone_at is not None, f"the unused dependency was never recycled\n{lazyload.logs()}"
    # `idle` went after its recycle_after (+ expire_wait), while `live` stayed all along, on
    # calls that went direct - only the caller's own sidecar saw them
    assert idle_gone_at - started >= RECYCLE_AFTER
    assert direct_calls >= RECYCLE_AFTER, direct_calls
    idle_cluster = f"outbound|80||{idle.host}"
    lazyload.wait_for(
        lambda: live_cluster in (held := caller.clusters()) and idle_cluster not in held,
        "istiod did not push the recycled scope",
    )
